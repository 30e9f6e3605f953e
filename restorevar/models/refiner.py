"""Refiners that turn the discrete ``f_hat`` into a continuous latent for the fine-tuned decoder.

Strategies behind one interface (``refine`` for inference, ``loss`` for training):
- ``lrt``: the Latent Refiner Transformer; predicts a residual, cross-attending to the VAR's last block.
- ``lrt_no_last_block``: the same without that guidance (ablation).
- ``hart_mlp``: a HART-style per-token MLP diffusion head that denoises the residual (ablation).
- ``none``: ``f_hat`` unchanged.

``residual="detail"`` (LRT kinds; a deviation from the paper, whose residual is ``"full"``) keeps the LRT's residual
off the low frequencies: its mean over every ``detail_cell`` x ``detail_cell`` block of latent pixels is removed, so
the refiner adds detail and leaves colour and tone to the transformer's tokens. Trained on a few photographs, a
full residual learns a tone correction for every image alike and re-tones a blurred photograph as much as a dark one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from restorevar.config import check_range
from restorevar.errors import UserError


@dataclass
class RefinerConfig:
    kind: Literal["lrt", "lrt_no_last_block", "hart_mlp", "none"] = "lrt"
    # LRT
    width: int = 384
    depth: int = 12
    heads: int = 6
    dim_head: int = 64
    mlp_dim: int = 768
    dropout: float = 0.0
    # hart_mlp
    hart_width: int = 1024
    hart_depth: int = 6
    hart_train_steps: int = 1000
    hart_sample_steps: int = 8
    residual: Literal["full", "detail"] = "full"  # LRT kinds: "detail" removes the residual's block means
    detail_cell: int = 2  # latent pixels per block side for "detail" (2: the 8 x 8 thumbnail of a 64 px image)

    def validate(self) -> None:
        # Every field, whichever kind is used: a checkpoint's stored config is checked before any refiner is
        # built, and upper bounds keep it from describing one that no machine could hold.
        check_range("refiner.width", self.width, 1, 4096)
        check_range("refiner.depth", self.depth, 1, 64)
        check_range("refiner.heads", self.heads, 1, 256)
        check_range("refiner.dim_head", self.dim_head, 1, 1024)
        check_range("refiner.mlp_dim", self.mlp_dim, 1, 16384)
        check_range("refiner.dropout", self.dropout, 0, 1, high_open=True)
        check_range("refiner.hart_width", self.hart_width, 1, 4096)
        check_range("refiner.hart_depth", self.hart_depth, 1, 64)
        check_range("refiner.hart_train_steps", self.hart_train_steps, 1, 100_000)
        if not 0 < self.hart_sample_steps <= self.hart_train_steps:
            raise UserError("refiner.hart_sample_steps must be in [1, hart_train_steps]")
        if self.residual not in ("full", "detail"):
            raise UserError(f"refiner.residual must be full or detail, got {self.residual!r}")
        check_range("refiner.detail_cell", self.detail_cell, 1, 64)
        if self.residual == "detail" and self.kind not in ("lrt", "lrt_no_last_block"):
            raise UserError(f"refiner.residual=detail is a setting of the LRT refiners, not of {self.kind!r}; "
                            "leave it at full")


def _tokens(f_BChw: torch.Tensor) -> torch.Tensor:
    return f_BChw.flatten(2).transpose(1, 2)


def _grid(f_BNC: torch.Tensor, like_BChw: torch.Tensor) -> torch.Tensor:
    return f_BNC.transpose(1, 2).reshape(like_BChw.shape)


# ------------------------------------------------------------------------------------------------
# LRT
# ------------------------------------------------------------------------------------------------
class MHA(nn.Module):
    """Plain pre-LN multi-head attention; self-attention when ``ctx`` is None."""

    def __init__(self, width: int, heads: int, dim_head: int, cross: bool, dropout: float):
        super().__init__()
        inner, self.heads, self.cross = heads * dim_head, heads, cross
        if cross:
            self.norm_q, self.norm_kv = nn.LayerNorm(width), nn.LayerNorm(width)
            self.to_q = nn.Linear(width, inner, bias=False)
            self.to_kv = nn.Linear(width, 2 * inner, bias=False)
        else:
            self.norm = nn.LayerNorm(width)
            self.to_qkv = nn.Linear(width, 3 * inner, bias=False)
        self.to_out = nn.Linear(inner, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x_BLC: torch.Tensor, ctx_BNC: torch.Tensor | None = None) -> torch.Tensor:
        if self.cross:
            q = self.to_q(self.norm_q(x_BLC))
            k, v = self.to_kv(self.norm_kv(ctx_BNC)).chunk(2, dim=-1)
        else:
            q, k, v = self.to_qkv(self.norm(x_BLC)).chunk(3, dim=-1)
        B = x_BLC.shape[0]
        q, k, v = (t.view(B, t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return self.dropout(self.to_out(out))


class LRTLayer(nn.Module):
    def __init__(self, cfg: RefinerConfig, cross: bool):
        super().__init__()
        self.attn = MHA(cfg.width, cfg.heads, cfg.dim_head, cross=False, dropout=cfg.dropout)
        self.ffn = nn.Sequential(
            nn.LayerNorm(cfg.width), nn.Linear(cfg.width, cfg.mlp_dim), nn.GELU(),
            nn.Dropout(cfg.dropout), nn.Linear(cfg.mlp_dim, cfg.width), nn.Dropout(cfg.dropout),
        )
        self.cross = MHA(cfg.width, cfg.heads, cfg.dim_head, cross=True, dropout=cfg.dropout) if cross else None

    def forward(self, x_BLC: torch.Tensor, ctx_BNC: torch.Tensor | None) -> torch.Tensor:
        x_BLC = x_BLC + self.attn(x_BLC)
        x_BLC = x_BLC + self.ffn(x_BLC)
        if self.cross is not None:
            x_BLC = x_BLC + self.cross(x_BLC, ctx_BNC)
        return x_BLC


class LatentRefinerTransformer(nn.Module):
    trainable = True

    def __init__(self, cfg: RefinerConfig, cvae: int, var_width: int, n_latent: int, n_var_tokens: int):
        super().__init__()
        self.use_hidden = cfg.kind == "lrt"
        W = cfg.width
        self.norm_in, self.proj_in = nn.LayerNorm(cvae), nn.Linear(cvae, W, bias=False)
        self.pos_1NW = nn.Parameter(torch.randn(1, n_latent, W) * 0.02)
        if self.use_hidden:
            self.norm_in_cond = nn.LayerNorm(var_width)
            self.proj_in_cond = nn.Linear(var_width, W, bias=False)
            self.pos_cond_1LW = nn.Parameter(torch.randn(1, n_var_tokens, W) * 0.02)
        self.layers = nn.ModuleList(LRTLayer(cfg, cross=self.use_hidden) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(W)
        self.proj_out = nn.Linear(W, cvae, bias=False)
        self.detail_cell = cfg.detail_cell if cfg.residual == "detail" else 0

    def refine(self, f_hat_BChw: torch.Tensor, hidden_BLC: torch.Tensor | None, seed: int | None = None) -> torch.Tensor:
        x = self.proj_in(self.norm_in(_tokens(f_hat_BChw))) + self.pos_1NW
        ctx = None
        if self.use_hidden:
            if hidden_BLC is None:
                raise ValueError("the lrt refiner needs the transformer's last-block hidden states")
            ctx = self.proj_in_cond(self.norm_in_cond(hidden_BLC)) + self.pos_cond_1LW
        for layer in self.layers:
            x = layer(x, ctx)
        r_BChw = _grid(self.proj_out(self.norm_out(x)), f_hat_BChw)
        if self.detail_cell:
            r_BChw = r_BChw - block_mean(r_BChw, self.detail_cell)
        return f_hat_BChw + r_BChw

    def loss(self, f_hat_BChw, hidden_BLC, target_BChw) -> torch.Tensor:
        return F.l1_loss(self.refine(f_hat_BChw, hidden_BLC), target_BChw)


def block_mean(x_BChw: torch.Tensor, cell: int) -> torch.Tensor:
    """Each pixel replaced by the mean of its ``cell`` x ``cell`` block (a ragged edge block by its own mean)."""
    h, w = x_BChw.shape[-2:]
    m = F.avg_pool2d(x_BChw, cell, stride=cell, ceil_mode=True, count_include_pad=False)
    return m.repeat_interleave(cell, dim=-2).repeat_interleave(cell, dim=-1)[..., :h, :w]


# ------------------------------------------------------------------------------------------------
# HART-style MLP diffusion head
# ------------------------------------------------------------------------------------------------
def timestep_embedding(t_B: torch.Tensor, dim: int = 256, max_period: float = 1e4) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t_B.device, dtype=torch.float32) / half)
    ang = t_B.float()[:, None] * freqs[None]
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


class AdaLNResBlock(nn.Module):
    def __init__(self, W: int):
        super().__init__()
        self.norm = nn.LayerNorm(W, eps=1e-6, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(W, W), nn.SiLU(), nn.Linear(W, W))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(W, 3 * W))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x_NW: torch.Tensor, c_NW: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(c_NW).chunk(3, dim=-1)
        return x_NW + gate * self.mlp(self.norm(x_NW) * (1 + scale) + shift)


class HartMLPRefiner(nn.Module):
    """Denoises the per-token residual ``f - f_hat`` (epsilon prediction, cosine schedule, DDIM sampling).

    Each latent token is conditioned on its ``f_hat`` vector and on the VAR's last-scale hidden state at
    the same grid position, as HART conditions its diffusion head on the transformer's output.
    """

    trainable = True

    def __init__(self, cfg: RefinerConfig, cvae: int, var_width: int, n_latent: int):
        super().__init__()
        W, self.cfg, self.n_latent = cfg.hart_width, cfg, n_latent
        self.time_embed = nn.Sequential(nn.Linear(256, W), nn.SiLU(), nn.Linear(W, W))
        self.cond_embed = nn.Linear(cvae + var_width, W)
        self.input_proj = nn.Linear(cvae, W)
        self.blocks = nn.ModuleList(AdaLNResBlock(W) for _ in range(cfg.hart_depth))
        self.final_norm = nn.LayerNorm(W, eps=1e-6, elementwise_affine=False)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(W, 2 * W))
        self.final_out = nn.Linear(W, cvae)
        nn.init.zeros_(self.final_out.weight)
        nn.init.zeros_(self.final_out.bias)
        T = cfg.hart_train_steps
        s = 0.008  # cosine schedule offset (Nichol & Dhariwal)
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        abar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        abar = (abar / abar[0])[1:].clamp(min=1e-5)
        self.register_buffer("alpha_bar_T", abar.float(), persistent=False)

    def _eps(self, x_NC, t_N, cond_NC) -> torch.Tensor:
        c = self.time_embed(timestep_embedding(t_N)) + self.cond_embed(cond_NC)
        h = self.input_proj(x_NC)
        for blk in self.blocks:
            h = blk(h, c)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        return self.final_out(self.final_norm(h) * (1 + scale) + shift)

    def _cond(self, f_hat_BChw, hidden_BLC) -> torch.Tensor:
        if hidden_BLC is None:
            raise ValueError("the hart_mlp refiner needs the transformer's last-block hidden states")
        h_last = hidden_BLC[:, -self.n_latent:]
        return torch.cat([_tokens(f_hat_BChw), h_last], dim=-1).flatten(0, 1)

    def loss(self, f_hat_BChw, hidden_BLC, target_BChw) -> torch.Tensor:
        cond = self._cond(f_hat_BChw, hidden_BLC)
        x0 = _tokens(target_BChw - f_hat_BChw).flatten(0, 1)
        t = torch.randint(0, self.cfg.hart_train_steps, (x0.shape[0],), device=x0.device)
        ab = self.alpha_bar_T[t][:, None]
        noise = torch.randn_like(x0)
        return F.mse_loss(self._eps(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t, cond), noise)

    def refine(self, f_hat_BChw, hidden_BLC, seed: int | None = None) -> torch.Tensor:
        cond = self._cond(f_hat_BChw, hidden_BLC)
        gen = torch.Generator(device=f_hat_BChw.device)
        gen.manual_seed(0 if seed is None else seed)
        x = torch.randn(cond.shape[0], f_hat_BChw.shape[1], generator=gen, device=cond.device, dtype=cond.dtype)
        ts = torch.linspace(self.cfg.hart_train_steps - 1, 0, self.cfg.hart_sample_steps).round().long().tolist()
        for i, t in enumerate(ts):  # deterministic DDIM (eta = 0)
            ab = self.alpha_bar_T[t]
            eps = self._eps(x, torch.full((x.shape[0],), t, device=x.device), cond)
            x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
            ab_prev = self.alpha_bar_T[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(ab)
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        B, C = f_hat_BChw.shape[:2]
        return f_hat_BChw + _grid(x.view(B, -1, C), f_hat_BChw)


# ------------------------------------------------------------------------------------------------
# No refiner, and the factory
# ------------------------------------------------------------------------------------------------
class NoRefiner(nn.Module):
    trainable = False

    def refine(self, f_hat_BChw, hidden_BLC=None, seed: int | None = None) -> torch.Tensor:
        return f_hat_BChw

    def loss(self, f_hat_BChw, hidden_BLC, target_BChw) -> torch.Tensor:
        raise RuntimeError("the 'none' refiner has nothing to train")


def build_refiner(cfg: RefinerConfig, cvae: int, var_width: int, n_latent: int, n_var_tokens: int) -> nn.Module:
    if cfg.kind in ("lrt", "lrt_no_last_block"):
        return LatentRefinerTransformer(cfg, cvae, var_width, n_latent, n_var_tokens)
    if cfg.kind == "hart_mlp":
        return HartMLPRefiner(cfg, cvae, var_width, n_latent)
    return NoRefiner()
