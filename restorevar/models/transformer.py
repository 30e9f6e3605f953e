"""The RestoreVAR transformer: VAR's next-scale predictor, conditioned on the degraded image.

Differences from VAR (spec section 3): cross-attention to the degraded latent after every FFN,
behind a zero-initialised gain; an SOS token nudged by the pooled degraded latent; no AdaLN; 2D RoPE
instead of absolute positions. ``positions`` and ``conditioning`` switch to the ablation variants.

``condition_inject="colocated"`` is this suite's deviation from the paper: each token's input also gets the
degraded latent at its own scale and place (area-downsampled for continuous conditioning, the degraded image's
own token vectors for discrete), through a zero-initialised projection. Cross-attention behind a zero gate learns
to read the condition too slowly for a CPU budget; a co-located sum gives every weight of that projection a
gradient from the first step, and copying the input becomes one linear map away.
``"colocated_logits"`` adds the same co-located latent to the logits instead, through a zero-initialised linear
map: a skip past the blocks, so that a prior trained to ignore unfamiliar directions cannot wash it out.
``"colocated_shift"`` is that skip reading the co-located latent moved by a shift in latent space, predicted from
the last block's output and from the latent itself (both zero-initialised). Started as the copy predictor, the
skip then corrects the copy where a degradation moves the latent: a colour or tone change is one direction for
every token there, learnt once, where the logits would have to learn it token by token.
``"colocated_image_shift"`` adds a per-image affine map of the latent to that shift, predicted from the degraded
image's own statistics (each scale's mean and root mean square of its latent; zero-initialised). One shift for every
image re-tones all of them alike, a blurred photograph as much as a hazy one; per-image statistics tell them apart
(blur leaves the coarse tones alone and empties the fine scales), so the correction follows the degradation.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from restorevar.errors import UserError
from restorevar.models.attention import CrossAttention, SelfAttention
from restorevar.models.kv_cache import GrowingKVCache, KVCache, StaticKVCache
from restorevar.models.quantizer import MultiScaleQuantizer
from restorevar.models.rope import rope_cos_sin, scale_positions

ConditionInject = Literal["none", "colocated", "colocated_logits", "colocated_shift", "colocated_image_shift"]
SHIFTS = ("colocated_shift", "colocated_image_shift")  # the values whose logits skip reads a moved latent
CONDITION_INJECTS = get_args(ConditionInject)


# the parameters that read the condition: a prior has none of them, and the condition path's learning rate is theirs
CONDITION_PARTS = ("cross_attn", "cond_", "sos_")


def reads_condition(name: str) -> bool:
    return any(part in name for part in CONDITION_PARTS)


@dataclass
class TransformerConfig:
    depth: int = 16
    width: int = 1024
    heads: int = 16
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1 * 16 / 24
    positions: Literal["rope2d", "ape"] = "rope2d"
    conditioning: Literal["continuous", "discrete"] = "continuous"
    condition_inject: ConditionInject = "none"  # "none" is the paper's model
    shift_reads_stream: bool = True  # the shifts: False drops the shift predicted from the last block's output
    num_classes: int = 1000  # kept so VAR's class table loads; the null class is the SOS
    rope_theta: float = 1e4
    norm_eps: float = 1e-6
    # The cross-attention's q/kv LayerNorms keep the official value (PyTorch's default), not norm_eps.
    cross_norm_eps: float = 1e-5
    init_head: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    def validate(self) -> None:
        from restorevar.config import check_range

        # Bounds first (a zero head count would divide by zero below); the upper ones keep a checkpoint's
        # stored config from describing a model that cannot be built (VAR's largest is depth 30, width 1920).
        check_range("transformer.depth", self.depth, 1, 64)
        check_range("transformer.width", self.width, 1, 4096)
        check_range("transformer.heads", self.heads, 1, 256)
        check_range("transformer.mlp_ratio", self.mlp_ratio, 0, 16, low_open=True)
        check_range("transformer.num_classes", self.num_classes, 0, 100_000)
        check_range("transformer.rope_theta", self.rope_theta, 0, 1e9, low_open=True)
        check_range("transformer.init_head", self.init_head, 0, 10)
        if round(self.width * self.mlp_ratio) < 1:
            raise UserError(f"transformer: width * mlp_ratio must give an FFN of at least 1 unit, got "
                            f"{self.width} * {self.mlp_ratio:g}")
        if self.width % self.heads:
            raise UserError(f"transformer.width={self.width} must be divisible by transformer.heads={self.heads}")
        if self.positions == "rope2d" and self.head_dim % 4:
            raise UserError(f"transformer: rope2d needs a head dim divisible by 4, got {self.head_dim}")
        if not 0 <= self.drop_path_rate < 1:
            raise UserError(f"transformer.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if self.condition_inject not in CONDITION_INJECTS:
            raise UserError("transformer.condition_inject must be one of " + ", ".join(map(repr, CONDITION_INJECTS))
                            + f", got {self.condition_inject!r}")
        if not self.shift_reads_stream and self.condition_inject not in SHIFTS:
            raise UserError("transformer.shift_reads_stream=false is a setting of the shifts ("
                            + ", ".join(SHIFTS) + f"), not of condition_inject={self.condition_inject!r}")
        for name in ("norm_eps", "cross_norm_eps"):
            if not getattr(self, name) > 0:
                raise UserError(f"transformer.{name} must be positive, got {getattr(self, name)}")
            check_range(f"transformer.{name}", getattr(self, name), 0, 1, low_open=True)


@dataclass
class GenerateOutput:
    idx_list: list[torch.Tensor]  # per scale (B, pn, pn)
    f_hat_BChw: torch.Tensor  # accumulated discrete latent
    hidden_BLC: torch.Tensor  # last block's output for every token (the LRT's guidance)
    logits_list: list[torch.Tensor] | None = None  # per scale (B, pn*pn, V), if asked


# ------------------------------------------------------------------------------------------------
# Block
# ------------------------------------------------------------------------------------------------
class DropPath(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class FFN(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps, elementwise_affine=False)
        self.self_attn = SelfAttention(cfg.width, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps, elementwise_affine=False)
        self.ffn = FFN(cfg.width, round(cfg.width * cfg.mlp_ratio))
        self.cross_attn = CrossAttention(cfg.width, cfg.heads, cfg.cross_norm_eps)
        self.drop_path = DropPath(drop_path)

    def forward(self, x_BLC, rope, cross_kv, mask_LL=None, cache=None, reads=None) -> torch.Tensor:
        """``rope`` rotates this stream's queries (and self-attention keys); ``cross_kv`` is pre-rotated.
        ``reads``, a list, collects the cross-attention's ungated output (an auxiliary loss's input)."""
        x_BLC = x_BLC + self.drop_path(self.self_attn(self.norm1(x_BLC), rope, mask_LL, cache))
        x_BLC = x_BLC + self.drop_path(self.ffn(self.norm2(x_BLC)))
        read_BLC = self.cross_attn.read(x_BLC, cross_kv, rope)
        if reads is not None:
            reads.append(read_BLC)
        return x_BLC + self.cross_attn.gain * read_BLC


# ------------------------------------------------------------------------------------------------
# Transformer
# ------------------------------------------------------------------------------------------------
class RestoreVARTransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig, vocab_size: int, cvae: int, patch_nums: tuple[int, ...]):
        super().__init__()
        self.cfg, self.vocab_size, self.cvae, self.patch_nums = cfg, vocab_size, cvae, tuple(patch_nums)
        C, K = cfg.width, len(patch_nums)
        self.L = sum(pn * pn for pn in patch_nums)
        self.first_l = patch_nums[0] ** 2
        self.grid = patch_nums[-1]
        self.n_cond = self.grid**2 if cfg.conditioning == "continuous" else self.L

        self.word_embed = nn.Linear(cvae, C)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, C)
        self.lvl_embed = nn.Embedding(K, C)
        self.cond_proj = nn.Linear(cvae, cvae)
        self.cond_embed = nn.Linear(cvae, C)
        self.cond_lvl_embed = nn.Embedding(1 if cfg.conditioning == "continuous" else K, C)
        self.sos_cond_embed = nn.Linear(cvae, C)
        self.sos_gain = nn.Parameter(torch.zeros(()))  # zero: SOS starts as VAR's null-class token
        if cfg.condition_inject != "none":
            self.cond_inject = nn.Linear(cvae, C if cfg.condition_inject == "colocated" else vocab_size)
        if cfg.condition_inject in SHIFTS:
            if cfg.shift_reads_stream:
                self.cond_shift_h = nn.Linear(C, cvae)  # the shift the stream asks for
            self.cond_shift_c = nn.Linear(cvae, cvae)  # and an affine map of the latent itself
        if cfg.condition_inject == "colocated_image_shift":  # per image: a scale and an offset of every latent
            n_stats = 2 * len(patch_nums) * cvae
            self.cond_shift_img = nn.Linear(n_stats, 2 * cvae)
        if cfg.positions == "ape":
            self.pos_start = nn.Parameter(torch.zeros(1, self.first_l, C))
            self.pos_1LC = nn.Parameter(torch.zeros(1, self.L, C))
            self.cond_pos_1NC = nn.Parameter(torch.zeros(1, self.n_cond, C))
        dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # rises linearly
        self.blocks = nn.ModuleList(Block(cfg, p) for p in dpr)
        self.head_norm = nn.LayerNorm(C, eps=cfg.norm_eps, elementwise_affine=False)
        self.head = nn.Linear(C, vocab_size)

        lvl_L = torch.cat([torch.full((pn * pn,), k) for k, pn in enumerate(patch_nums)])
        self.register_buffer("lvl_L", lvl_L, persistent=False)
        # training-time memory switch, not part of the architecture: blocks recompute activations in backward
        self.activation_checkpointing = False
        self.register_buffer("mask_LL", lvl_L[None, :] <= lvl_L[:, None], persistent=False)
        cond_lvl = torch.zeros(self.n_cond, dtype=torch.long) if cfg.conditioning == "continuous" else lvl_L
        self.register_buffer("cond_lvl_N", cond_lvl, persistent=False)
        if cfg.positions == "rope2d":
            cos, sin = rope_cos_sin(scale_positions(self.patch_nums, self.grid), cfg.head_dim, cfg.rope_theta)
            cond_pos = scale_positions((self.grid,) if cfg.conditioning == "continuous" else self.patch_nums, self.grid)
            ccos, csin = rope_cos_sin(cond_pos, cfg.head_dim, cfg.rope_theta)
            for name, t in {"rope_cos": cos, "rope_sin": sin, "cond_rope_cos": ccos, "cond_rope_sin": csin}.items():
                self.register_buffer(name, t, persistent=False)
        self.reset_parameters()

    # -- init ----------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        std = math.sqrt(1 / self.cfg.width / 3)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.head.weight.mul_(self.cfg.init_head)
            for b in self.blocks:
                b.self_attn.proj.weight.div_(math.sqrt(2 * self.cfg.depth))
                b.ffn.fc2.weight.div_(math.sqrt(2 * self.cfg.depth))
        if self.cfg.positions == "ape":
            for p in (self.pos_start, self.pos_1LC, self.cond_pos_1NC):
                nn.init.trunc_normal_(p, std=std)
        if self.cfg.condition_inject != "none":  # zero: training starts from the prior's behaviour
            for name, m in self.named_children():
                if name.startswith(("cond_inject", "cond_shift")):
                    nn.init.zeros_(m.weight)
                    nn.init.zeros_(m.bias)

    # -- pieces --------------------------------------------------------------------------------
    def _rope(self, begin: int, end: int):
        if self.cfg.positions != "rope2d":
            return None
        return self.rope_cos[begin:end], self.rope_sin[begin:end]

    def _cond_rope(self):
        return (self.cond_rope_cos, self.cond_rope_sin) if self.cfg.positions == "rope2d" else None

    def embed_condition(self, cond_BNCv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioning tokens ``(B, N, C)`` for cross-attention and the SOS ``(B, first_l, C)``."""
        if cond_BNCv.shape[1:] != (self.n_cond, self.cvae):
            raise ValueError(f"conditioning must be (B, {self.n_cond}, {self.cvae}), got {tuple(cond_BNCv.shape)}")
        proj_BNCv = self.cond_proj(cond_BNCv)
        cond_BNC = self.cond_embed(proj_BNCv) + self.cond_lvl_embed(self.cond_lvl_N)
        B = cond_BNCv.shape[0]
        null = self.class_emb.weight[self.cfg.num_classes]
        sos_BC = null + self.sos_gain * self.sos_cond_embed(proj_BNCv.mean(dim=1))
        sos_BlC = sos_BC[:, None, :].expand(B, self.first_l, -1)
        if self.cfg.positions == "ape":
            cond_BNC = cond_BNC + self.cond_pos_1NC
            sos_BlC = sos_BlC + self.pos_start
        return cond_BNC, sos_BlC

    def colocated_BLCv(self, cond_BNCv: torch.Tensor) -> torch.Tensor | None:
        """The degraded latent at every token's own scale and place ``(B, L, Cvae)``: for discrete conditioning its
        own token vectors, for continuous the area mean over each token's cell; None for the paper's model."""
        if self.cfg.condition_inject == "none":
            return None
        if self.cfg.conditioning == "discrete":  # already one vector per token, scale by scale
            return cond_BNCv
        B = cond_BNCv.shape[0]
        f_BCvhw = cond_BNCv.transpose(1, 2).reshape(B, self.cvae, self.grid, self.grid)
        per_scale = [F.interpolate(f_BCvhw, size=(pn, pn), mode="area").flatten(2) for pn in self.patch_nums]
        return torch.cat(per_scale, dim=2).transpose(1, 2)

    def image_affine(self, c_BLCv: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """For ``colocated_image_shift``, each image's scale and offset ``(B, 1, Cvae)`` each, from its degraded
        latent's per-scale mean and root mean square; None otherwise."""
        if self.cfg.condition_inject != "colocated_image_shift":
            return None
        stats, begin = [], 0
        for pn in self.patch_nums:
            s_BlCv = c_BLCv[:, begin:begin + pn * pn].float()
            stats += [s_BlCv.mean(1), s_BlCv.pow(2).mean(1).sqrt()]
            begin += pn * pn
        gamma_BCv, beta_BCv = self.cond_shift_img(torch.cat(stats, dim=-1)).chunk(2, dim=-1)
        return gamma_BCv[:, None], beta_BCv[:, None]

    def skip_input(self, c_BlCv: torch.Tensor, h_BlC: torch.Tensor,
                   affine: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """What the logits skip reads for tokens whose co-located latent is ``c_BlCv`` and last block output
        ``h_BlC``: the latent itself, or for the shifts the latent moved (by ``affine``, the image's own scale and
        offset, too)."""
        if self.cfg.condition_inject not in SHIFTS:
            return c_BlCv
        m_BlCv = c_BlCv + self.cond_shift_c(c_BlCv)
        if self.cfg.shift_reads_stream:
            m_BlCv = m_BlCv + self.cond_shift_h(self.head_norm(h_BlC))
        if affine is not None:
            m_BlCv = m_BlCv + affine[0] * c_BlCv + affine[1]
        return m_BlCv

    def cross_kv(self, cond_BNC: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        rope = self._cond_rope()
        return [b.cross_attn.compute_kv(cond_BNC, rope) for b in self.blocks]

    def _add_positions(self, x_BlC: torch.Tensor, begin: int, end: int) -> torch.Tensor:
        x_BlC = x_BlC + self.lvl_embed(self.lvl_L[begin:end])
        if self.cfg.positions == "ape":
            x_BlC = x_BlC + self.pos_1LC[:, begin:end]
        return x_BlC

    def logits(self, h_BLC: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_norm(h_BLC))

    def logits_fp32(self, h_BLC: torch.Tensor) -> torch.Tensor:
        """The head in fp32 even under autocast: bf16 logits turn near-ties into flipped greedy tokens."""
        with fp32_region(h_BLC.device.type):
            return self.logits(h_BLC.float())

    # -- teacher forcing -----------------------------------------------------------------------
    def forward(
        self, cond_BNCv: torch.Tensor, x_BLCv_wo_first: torch.Tensor, return_hidden: bool = False,
        reads: list[torch.Tensor] | None = None, moved: list[torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """All scales at once under the block-causal mask: logits ``(B, L, V)``. ``reads``, a list, collects each
        block's ungated cross-attention output ``(B, L, C)``; ``moved`` the latent the logits skip reads
        ``(B, L, Cvae)``."""
        cond_BNC, sos_BlC = self.embed_condition(cond_BNCv)
        x_BLC = torch.cat([sos_BlC, self.word_embed(x_BLCv_wo_first)], dim=1)
        x_BLC = self._add_positions(x_BLC, 0, self.L)
        c_BLCv = self.colocated_BLCv(cond_BNCv)
        to_input = self.cfg.condition_inject == "colocated"
        if to_input:
            x_BLC = x_BLC + self.cond_inject(c_BLCv)
        kvs, rope = self.cross_kv(cond_BNC), self._rope(0, self.L)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        if recompute and reads is not None:  # a recomputed block's outputs are not this pass's tensors
            raise UserError("the condition path's auxiliary loss does not work with activation checkpointing; "
                            "switch one of them off")
        for block, kv in zip(self.blocks, kvs):
            if recompute:  # drop-path's draw is replayed: the RNG state is saved with the inputs
                x_BLC = torch.utils.checkpoint.checkpoint(block, x_BLC, rope, kv, self.mask_LL, use_reentrant=False)
            else:
                x_BLC = block(x_BLC, rope, kv, mask_LL=self.mask_LL, reads=reads)
        logits_BLV = self.logits(x_BLC)
        if c_BLCv is not None and not to_input:
            m_BLCv = self.skip_input(c_BLCv, x_BLC, self.image_affine(c_BLCv))
            if moved is not None:
                moved.append(m_BLCv)
            logits_BLV = logits_BLV + self.cond_inject(m_BLCv)
        return (logits_BLV, x_BLC) if return_hidden else logits_BLV

    # -- cached inference ----------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        cond_BNCv: torch.Tensor,
        quantizer: MultiScaleQuantizer,
        top_k: int = 0,
        top_p: float = 0.0,
        temperature: float = 1.0,
        seed: int | None = None,
        precompute_cross_kv: bool = True,
        kv_cache: Literal["static", "growing"] = "static",
        return_logits: bool = False,
    ) -> GenerateOutput:
        """Predict the clean image's tokens scale by scale with a KV cache (greedy unless top-k/top-p).

        ``precompute_cross_kv=False`` and ``kv_cache="growing"`` give the plain path (cross-attention K/V
        recomputed in every block at every scale, caches grown by concatenation); the results are the same.
        Under bf16 autocast the head, the token accumulation ``f_hat`` and the residual stream stay fp32.
        """
        if kv_cache not in ("static", "growing"):
            raise ValueError(f"kv_cache must be 'static' or 'growing', got {kv_cache!r}")
        B = cond_BNCv.shape[0]
        gen = None
        if top_k > 0 or top_p > 0:
            gen = torch.Generator(device=cond_BNCv.device)
            gen.manual_seed(0 if seed is None else seed)
        cond_BNC, sos_BlC = self.embed_condition(cond_BNCv)
        kvs = self.cross_kv(cond_BNC) if precompute_cross_kv else None
        crope = self._cond_rope()
        c_BLCv = self.colocated_BLCv(cond_BNCv)
        to_input = self.cfg.condition_inject == "colocated"
        with fp32_region(cond_BNCv.device.type):
            affine = self.image_affine(c_BLCv)
        caches: list[KVCache] = [StaticKVCache(self.L) if kv_cache == "static" else GrowingKVCache()
                                 for _ in self.blocks]
        f_hat = cond_BNCv.new_zeros(B, self.cvae, self.grid, self.grid)
        x_BlC = sos_BlC
        idx_list, hidden, logits_list, begin = [], [], [], 0
        for k, pn in enumerate(self.patch_nums):
            end = begin + pn * pn
            x_BlC = self._add_positions(x_BlC, begin, end)
            if to_input:
                x_BlC = x_BlC + self.cond_inject(c_BLCv[:, begin:end])
            rope = self._rope(begin, end)
            for i, block in enumerate(self.blocks):
                kv = kvs[i] if kvs is not None else block.cross_attn.compute_kv(cond_BNC, crope)
                x_BlC = block(x_BlC, rope, kv, cache=caches[i])
            hidden.append(x_BlC)
            logits_BlV = self.logits_fp32(x_BlC)
            if c_BLCv is not None and not to_input:
                with fp32_region(x_BlC.device.type):
                    m_BlCv = self.skip_input(c_BLCv[:, begin:end].float(), x_BlC.float(), affine)
                    logits_BlV = logits_BlV + self.cond_inject(m_BlCv).float()
            if return_logits:
                logits_list.append(logits_BlV)
            idx_Bl = sample_tokens(logits_BlV, top_k, top_p, temperature, gen)
            idx_Bhw = idx_Bl.view(B, pn, pn)
            idx_list.append(idx_Bhw)
            with fp32_region(f_hat.device.type):
                f_hat, next_map = quantizer.next_input(k, f_hat.float(), quantizer.embed(idx_Bhw).float())
            if k + 1 < len(self.patch_nums):
                x_BlC = self.word_embed(next_map.flatten(2).transpose(1, 2))
            begin = end
        return GenerateOutput(idx_list, f_hat, torch.cat(hidden, dim=1), logits_list if return_logits else None)


def fp32_region(device_type: str):
    """Autocast switched off (where the device has autocast at all: the meta device, used to count FLOPs, has not)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def sample_tokens(
    logits_BlV: torch.Tensor, top_k: int, top_p: float, temperature: float, gen: torch.Generator | None
) -> torch.Tensor:
    """Greedy argmax, or a seeded sample from the top-k / nucleus (top-p) filtered distribution."""
    if gen is None:
        return logits_BlV.argmax(dim=-1)
    logits = logits_BlV / max(temperature, 1e-6)
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p > 0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cum - sorted_logits.softmax(dim=-1) >= top_p  # keep the smallest prefix reaching top_p
        drop_sorted[..., 0] = False  # the likeliest token always stays: a tiny top_p rounds to 0 in float32
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    B, l, V = probs.shape
    return torch.multinomial(probs.view(B * l, V), 1, generator=gen).view(B, l)
