"""PromptIR (Potlapalli et al., NeurIPS 2023): the non-generative all-in-one baseline the RestoreVAR paper retrains.

A Restormer encoder-decoder over four levels (transposed attention across channels, MDTA; a gated depth-wise
feed-forward, GDFN), with a global residual (the output is added to the input). At each of the decoder's three
levels, a *prompt generation* block turns the features' global mean into softmax weights over ``prompt_len``
learnt prompts, sums the weighted prompts, resizes the sum to the features' size (bilinear) and mixes it with a
3 x 3 convolution; a *prompt interaction* block concatenates it with the features, runs one transformer block
over both and maps them back with a 1 x 1 convolution.

Shapes and counts follow the published configuration (the ``paper`` preset, 35.59 M parameters as the RestoreVAR
paper's Table 6 gives): width 48 doubling per level, (4, 6, 6, 8) blocks, (1, 2, 4, 8) heads, expansion 2.66,
4 refinement blocks, prompts of (64, 128, 320) channels at (64, 32, 16) px, 5 per level. The published model also
holds six 1 x 1 convolutions that its forward pass never calls; ``unused_published_layers`` keeps them so that
the parameter count (and a published checkpoint's tensors) match, and they change no output.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from restorevar.config import apply_overrides, check_range, from_dict
from restorevar.errors import UserError


@dataclass
class PromptIRConfig:
    dim: int = 48  # channels at level 1; level k has dim * 2**(k-1)
    num_blocks: tuple[int, int, int, int] = (4, 6, 6, 8)  # transformer blocks per level (level 4: the latent)
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    num_refinement_blocks: int = 4
    ffn_expansion: float = 2.66
    prompt_len: int = 5  # learnt prompts per decoder level
    prompt_dims: tuple[int, int, int] = (64, 128, 320)  # channels of the prompts at decoder levels 1, 2, 3
    prompt_sizes: tuple[int, int, int] = (64, 32, 16)  # their stored side in pixels (resized to the features)
    unused_published_layers: bool = False  # the six 1 x 1 convolutions the published model holds but never calls
    # The published weights read and write images in [0, 1]; this package's images are in [-1, 1]. A converted
    # published checkpoint sets it, so the same pixels reach the same weights.
    images_in_0_1: bool = False

    def validate(self) -> None:
        check_range("promptir.dim", self.dim, 1, 1024)
        check_range("promptir.num_refinement_blocks", self.num_refinement_blocks, 0, 64)
        check_range("promptir.ffn_expansion", self.ffn_expansion, 0, 16, low_open=True)
        check_range("promptir.prompt_len", self.prompt_len, 1, 256)
        for i, n in enumerate(self.num_blocks):
            check_range(f"promptir.num_blocks[{i}]", n, 1, 64)
        for i, (d, s) in enumerate(zip(self.prompt_dims, self.prompt_sizes)):
            check_range(f"promptir.prompt_dims[{i}]", d, 1, 4096)
            check_range(f"promptir.prompt_sizes[{i}]", s, 1, 1024)
        for level, (c, h) in enumerate(zip(self.level_channels, self.heads), start=1):
            if h < 1 or c % h:
                raise UserError(f"promptir.heads[{level - 1}]={h} must divide level {level}'s {c} channels")
        mid = self.heads[2]  # the prompt interaction blocks use level 3's head count, as the published model does
        for level, c in ((1, 2 * self.dim + self.prompt_dims[0]), (2, 4 * self.dim + self.prompt_dims[1]),
                         (3, 8 * self.dim + self.prompt_dims[2])):
            if c % mid:
                raise UserError(f"promptir: the level-{level} prompt interaction has {c} channels, which "
                                f"heads[2]={mid} must divide; change prompt_dims[{level - 1}]")

    @property
    def level_channels(self) -> tuple[int, int, int, int]:
        return tuple(self.dim * 2**k for k in range(4))  # type: ignore[return-value]


PRESETS: dict[str, dict] = {
    "paper": {"unused_published_layers": True},
    "small": {"dim": 32, "num_blocks": (2, 3, 3, 4), "num_refinement_blocks": 2, "prompt_dims": (32, 64, 160),
              "prompt_sizes": (32, 16, 8)},
    "cpu": {"dim": 16, "num_blocks": (1, 2, 2, 2), "num_refinement_blocks": 1, "prompt_dims": (16, 32, 64),
            "prompt_sizes": (16, 8, 4)},
    "tiny": {"dim": 8, "num_blocks": (1, 1, 1, 1), "heads": (1, 1, 2, 2), "num_refinement_blocks": 1,
             "prompt_len": 2, "prompt_dims": (8, 8, 16), "prompt_sizes": (8, 4, 2)},
}


def promptir_preset(name: str, overrides: list[str] | None = None) -> PromptIRConfig:
    """The named preset's config, with optional dotted ``key=value`` overrides (``dim=24``)."""
    if name not in PRESETS:
        raise UserError(f"unknown PromptIR preset {name!r}; choose one of: {', '.join(PRESETS)}")
    cfg = from_dict(PromptIRConfig, PRESETS[name])
    return apply_overrides(cfg, overrides) if overrides else cfg


@dataclass
class PromptIRRef:
    """PromptIR as a stage's config names it: a preset and overrides on it (as ``ModelRef`` names RestoreVAR)."""

    preset: str = "tiny"
    overrides: list[str] = field(default_factory=list)

    def build_config(self) -> PromptIRConfig:
        return promptir_preset(self.preset, list(self.overrides))  # typed and checked

    def validate(self) -> None:  # a bad preset or override fails where the stage's config is read, before any work
        self.build_config()


def load_promptir(path) -> PromptIR:
    """A trained PromptIR from its checkpoint (checked, as every checkpoint, before anything is built), in eval mode."""
    from restorevar.checkpoint import load_checkpoint, model_config

    ck = load_checkpoint(path)
    if ck.get("model") != "promptir":
        raise UserError(f"{path} holds a RestoreVAR checkpoint, not PromptIR; give one that train_promptir wrote")
    net = PromptIR(model_config(ck))
    net.load_state_dict(ck["components"]["promptir"])
    return net.eval()


# ------------------------------------------------------------------------------------------------
# Restormer blocks
# ------------------------------------------------------------------------------------------------
class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of every pixel (with bias), eps 1e-5 on the biased variance."""

    def __init__(self, c: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c))

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        mu = x_BCHW.mean(1, keepdim=True)
        var = x_BCHW.var(1, keepdim=True, unbiased=False)
        return (x_BCHW - mu) / torch.sqrt(var + 1e-5) * self.weight[:, None, None] + self.bias[:, None, None]


class TransposedAttention(nn.Module):
    """MDTA: attention across channels (a C/h x C/h map per head), queries and keys L2-normalised along the
    pixels, a learnt temperature per head; q, k, v from a 1 x 1 then a depth-wise 3 x 3 convolution."""

    def __init__(self, c: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=False)
        self.qkv_dw = nn.Conv2d(3 * c, 3 * c, 3, padding=1, groups=3 * c, bias=False)
        self.proj = nn.Conv2d(c, c, 1, bias=False)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x_BCHW.shape
        q, k, v = (t.reshape(B, self.heads, C // self.heads, H * W)
                   for t in self.qkv_dw(self.qkv(x_BCHW)).chunk(3, dim=1))
        attn_Bhcc = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * self.temperature
        return self.proj((attn_Bhcc.softmax(dim=-1) @ v).reshape(B, C, H, W))


class GatedFeedForward(nn.Module):
    """GDFN: a 1 x 1 expansion, a depth-wise 3 x 3 convolution, GELU(one half) times the other half, 1 x 1 back."""

    def __init__(self, c: int, expansion: float):
        super().__init__()
        hidden = int(c * expansion)
        self.expand = nn.Conv2d(c, 2 * hidden, 1, bias=False)
        self.dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.proj = nn.Conv2d(hidden, c, 1, bias=False)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        a, b = self.dw(self.expand(x_BCHW)).chunk(2, dim=1)
        return self.proj(F.gelu(a) * b)


class RestormerBlock(nn.Module):
    def __init__(self, c: int, heads: int, expansion: float):
        super().__init__()
        self.norm1, self.attn = ChannelLayerNorm(c), TransposedAttention(c, heads)
        self.norm2, self.ffn = ChannelLayerNorm(c), GatedFeedForward(c, expansion)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        x_BCHW = x_BCHW + self.attn(self.norm1(x_BCHW))
        return x_BCHW + self.ffn(self.norm2(x_BCHW))


def blocks(n: int, c: int, heads: int, expansion: float) -> nn.Sequential:
    return nn.Sequential(*(RestormerBlock(c, heads, expansion) for _ in range(n)))


def downsample(c: int) -> nn.Sequential:
    """Half the side, twice the channels: a 3 x 3 convolution to c/2, then pixel-unshuffle by 2."""
    return nn.Sequential(nn.Conv2d(c, c // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


def upsample(c: int) -> nn.Sequential:
    """Twice the side, half the channels: a 3 x 3 convolution to 2c, then pixel-shuffle by 2."""
    return nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1, bias=False), nn.PixelShuffle(2))


# ------------------------------------------------------------------------------------------------
# Prompts
# ------------------------------------------------------------------------------------------------
class PromptGeneration(nn.Module):
    """Softmax weights over the learnt prompts from the features' global mean; their weighted sum, resized to the
    features (bilinear) and mixed by a 3 x 3 convolution."""

    def __init__(self, prompt_dim: int, prompt_len: int, prompt_size: int, feature_dim: int):
        super().__init__()
        self.prompts_NCSS = nn.Parameter(torch.rand(prompt_len, prompt_dim, prompt_size, prompt_size))
        self.weights = nn.Linear(feature_dim, prompt_len)
        self.mix = nn.Conv2d(prompt_dim, prompt_dim, 3, padding=1, bias=False)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        w_BN = self.weights(x_BCHW.mean(dim=(-2, -1))).softmax(dim=1)
        p_BCSS = torch.einsum("bn,ncij->bcij", w_BN, self.prompts_NCSS)
        return self.mix(F.interpolate(p_BCSS, size=x_BCHW.shape[-2:], mode="bilinear", align_corners=False))


class PromptInteraction(nn.Module):
    """The features and their prompt concatenated, one transformer block over both, a 1 x 1 map to ``c_out``."""

    def __init__(self, c: int, prompt_dim: int, c_out: int, heads: int, expansion: float):
        super().__init__()
        self.block = RestormerBlock(c + prompt_dim, heads, expansion)
        self.reduce = nn.Conv2d(c + prompt_dim, c_out, 1, bias=False)

    def forward(self, x_BCHW: torch.Tensor, p_BPHW: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.block(torch.cat([x_BCHW, p_BPHW], dim=1)))


# ------------------------------------------------------------------------------------------------
# PromptIR
# ------------------------------------------------------------------------------------------------
class PromptIR(nn.Module):
    def __init__(self, cfg: PromptIRConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        c1, c2, c3, c4 = cfg.level_channels
        (n1, n2, n3, n4), (h1, h2, h3, h4), e = cfg.num_blocks, cfg.heads, cfg.ffn_expansion
        p1, p2, p3 = cfg.prompt_dims
        self.embed = nn.Conv2d(3, c1, 3, padding=1, bias=False)
        self.enc1, self.down1 = blocks(n1, c1, h1, e), downsample(c1)
        self.enc2, self.down2 = blocks(n2, c2, h2, e), downsample(c2)
        self.enc3, self.down3 = blocks(n3, c3, h3, e), downsample(c3)
        self.latent = blocks(n4, c4, h4, e)
        # decoder level 3: the latent with its prompt, mapped to c3 channels, up to level 3's size (c2 channels)
        self.prompt3 = PromptGeneration(p3, cfg.prompt_len, cfg.prompt_sizes[2], c4)
        self.interact3 = PromptInteraction(c4, p3, c3, h3, e)
        self.up3 = upsample(c3)
        self.fuse3 = nn.Conv2d(c2 + c3, c3, 1, bias=False)
        self.dec3 = blocks(n3, c3, h3, e)
        self.prompt2 = PromptGeneration(p2, cfg.prompt_len, cfg.prompt_sizes[1], c3)
        self.interact2 = PromptInteraction(c3, p2, c3, h3, e)
        self.up2 = upsample(c3)
        self.fuse2 = nn.Conv2d(c2 + c2, c2, 1, bias=False)
        self.dec2 = blocks(n2, c2, h2, e)
        self.prompt1 = PromptGeneration(p1, cfg.prompt_len, cfg.prompt_sizes[0], c2)
        self.interact1 = PromptInteraction(c2, p1, c2, h3, e)
        self.up1 = upsample(c2)  # to c1 channels, concatenated with level 1's c1: 2 c1 from here on
        self.dec1 = blocks(n1, 2 * c1, h1, e)
        self.refine = blocks(cfg.num_refinement_blocks, 2 * c1, h1, e)
        self.out = nn.Conv2d(2 * c1, 3, 3, padding=1, bias=False)
        if cfg.unused_published_layers:  # never called: kept for the published parameter count and tensors
            self.unused = nn.ModuleList(nn.Conv2d(i, o, 1, bias=False) for i, o in (
                (p1, p1), (p2, p2), (p3, 256), (c1 + p1, c1), (c2 + p2, c2), (c3 + 256, c3)))

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """The restored image, same size and range as ``x_B3HW``; its sides must be multiples of 8."""
        H, W = x_B3HW.shape[-2:]
        if H % 8 or W % 8:
            raise UserError(f"PromptIR needs image sides that are multiples of 8 (three halvings), got {H} x {W}")
        if self.cfg.images_in_0_1:
            return self._restore((x_B3HW + 1) / 2) * 2 - 1
        return self._restore(x_B3HW)

    def _restore(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(self.embed(x_B3HW))
        e2 = self.enc2(self.down1(e1))
        e3 = self.enc3(self.down2(e2))
        z = self.latent(self.down3(e3))
        z = self.interact3(z, self.prompt3(z))
        d3 = self.dec3(self.fuse3(torch.cat([self.up3(z), e3], dim=1)))
        d3 = self.interact2(d3, self.prompt2(d3))
        d2 = self.dec2(self.fuse2(torch.cat([self.up2(d3), e2], dim=1)))
        d2 = self.interact1(d2, self.prompt1(d2))
        d1 = self.refine(self.dec1(torch.cat([self.up1(d2), e1], dim=1)))
        return self.out(d1) + x_B3HW
