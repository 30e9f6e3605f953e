"""The multi-scale VQ-VAE: conv encoder/decoder around the residual quantizer (spec section 1)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from restorevar.config import check_range
from restorevar.errors import UserError
from restorevar.models.quantizer import MultiScaleQuantizer, QuantizeOutput

# Upper bounds of the config: generous next to the paper's model (512 px, vocabulary 4096, width 640, 2240
# tokens), and small enough that no accepted setting alone asks for more memory than a workstation has.
MAX_IMAGE_SIZE = 4096
MAX_WIDTH = 4096
MAX_LEVELS = 8
MAX_RES_BLOCKS = 16
MAX_VOCAB = 65536
MAX_SCALES = 64
MAX_TOKENS = 16384
MAX_SHARED_PHI = 64
MAX_LOSS_WEIGHT = 100.0


@dataclass
class VQVAEConfig:
    image_size: int = 512
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2  # encoder; the decoder uses one more per level
    z_channels: int = 32  # Cvae
    vocab_size: int = 4096
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
    n_shared_phi: int = 4
    phi_ratio: float = 0.5
    beta: float = 0.25
    norm_groups: int = 32
    dropout: float = 0.0
    # A parameter-free path pixels -> latent -> pixels: the encoder adds the area-downsampled image to the
    # latent (channel k carries colour k mod 3) and the decoder adds back the upsampled colour means of
    # those channels. GroupNorm removes each sample's per-group mean, so without it the absolute colour
    # and tone of a scene (what haze and low light change) must be smuggled through the convs and is
    # learnt only for the training scenes. The published tokenizer has no such path.
    shortcut: bool = False

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample

    @property
    def n_tokens(self) -> int:
        return sum(pn * pn for pn in self.patch_nums)

    def validate(self) -> None:
        # Bounds first: a checkpoint's stored config is read before anything is built from it, and a huge
        # vocabulary or width must be refused here rather than met as an allocation of hundreds of gigabytes.
        check_range("vqvae.image_size", self.image_size, 1, MAX_IMAGE_SIZE)
        check_range("vqvae.ch", self.ch, 1, MAX_WIDTH)
        check_range("vqvae.ch_mult length", len(self.ch_mult), 1, MAX_LEVELS)
        for i, m in enumerate(self.ch_mult):
            check_range(f"vqvae.ch_mult[{i}]", m, 1, MAX_WIDTH)
            check_range(f"vqvae: width ch * ch_mult[{i}]", self.ch * m, 1, MAX_WIDTH)
        check_range("vqvae.num_res_blocks", self.num_res_blocks, 1, MAX_RES_BLOCKS)
        check_range("vqvae.z_channels", self.z_channels, 1, MAX_WIDTH)
        check_range("vqvae.vocab_size", self.vocab_size, 2, MAX_VOCAB)
        check_range("vqvae.patch_nums length", len(self.patch_nums), 1, MAX_SCALES)
        for i, pn in enumerate(self.patch_nums):
            check_range(f"vqvae.patch_nums[{i}]", pn, 1, MAX_TOKENS)
        # the transformer holds an L x L attention mask and the refiner a position table per token
        check_range("vqvae: the token count (sum of patch_nums squared)", self.n_tokens, 1, MAX_TOKENS)
        check_range("vqvae.n_shared_phi", self.n_shared_phi, 1, MAX_SHARED_PHI)
        check_range("vqvae.phi_ratio", self.phi_ratio, 0, 1)
        check_range("vqvae.beta", self.beta, 0, MAX_LOSS_WEIGHT)
        check_range("vqvae.norm_groups", self.norm_groups, 1, MAX_WIDTH)
        check_range("vqvae.dropout", self.dropout, 0, 1, high_open=True)
        if self.image_size % self.downsample:
            raise UserError(f"vqvae.image_size={self.image_size} must be divisible by {self.downsample}")
        if self.patch_nums[-1] != self.latent_size:
            raise UserError(
                f"vqvae.patch_nums must end at the latent size {self.latent_size}, got {self.patch_nums[-1]}"
            )
        if self.shortcut and self.z_channels < 3:
            raise UserError(f"vqvae.shortcut needs z_channels >= 3 (one per colour), got {self.z_channels}")
        if list(self.patch_nums) != sorted(set(self.patch_nums)):
            raise UserError("vqvae.patch_nums must be strictly increasing")
        for c in {self.ch * m for m in self.ch_mult}:
            if c % self.norm_groups:
                raise UserError(f"vqvae: width {c} is not divisible by norm_groups={self.norm_groups}")


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------
def _norm(c: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, c, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in, groups), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out, groups), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over pixels, used only at the lowest resolution."""

    def __init__(self, c: int, groups: int):
        super().__init__()
        self.norm = _norm(c, groups)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x_BChw.shape
        q, k, v = self.qkv(self.norm(x_BChw)).flatten(2).transpose(1, 2).chunk(3, dim=-1)
        out_BLC = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return x_BChw + self.proj(out_BLC.transpose(1, 2).reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad keeps the output exactly half size


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution of the encoder or decoder: res blocks, optional attention after each, a resampler."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, attn: bool, resample: nn.Module | None, cfg: VQVAEConfig):
        super().__init__()
        g, d = cfg.norm_groups, cfg.dropout
        self.blocks = nn.ModuleList(ResBlock(c_in if i == 0 else c_out, c_out, g, d) for i in range(n_blocks))
        self.attns = nn.ModuleList(AttnBlock(c_out, g) for _ in range(n_blocks)) if attn else nn.ModuleList()
        self.resample = resample if resample is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            if len(self.attns):
                x = self.attns[i](x)
        return self.resample(x)


class Mid(nn.Module):
    def __init__(self, c: int, cfg: VQVAEConfig):
        super().__init__()
        self.block1 = ResBlock(c, c, cfg.norm_groups, cfg.dropout)
        self.attn = AttnBlock(c, cfg.norm_groups)
        self.block2 = ResBlock(c, c, cfg.norm_groups, cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.attn(self.block1(x)))


# ------------------------------------------------------------------------------------------------
# Encoder / decoder
# ------------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        n = len(widths)
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, padding=1)
        self.levels = nn.ModuleList(
            Level(
                cfg.ch if i == 0 else widths[i - 1], widths[i], cfg.num_res_blocks,
                attn=i == n - 1, resample=Downsample(widths[i]) if i != n - 1 else None, cfg=cfg,
            )
            for i in range(n)
        )
        self.mid = Mid(widths[-1], cfg)
        self.norm_out = _norm(widths[-1], cfg.norm_groups)
        self.conv_out = nn.Conv2d(widths[-1], cfg.z_channels, 3, padding=1)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x_B3HW)
        for level in self.levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        n = len(widths)
        self.conv_in = nn.Conv2d(cfg.z_channels, widths[-1], 3, padding=1)
        self.mid = Mid(widths[-1], cfg)
        # levels[0] runs first (lowest resolution); the official checkpoints number them the other way.
        self.levels = nn.ModuleList(
            Level(
                widths[min(i + 1, n - 1)], widths[i], cfg.num_res_blocks + 1,
                attn=i == n - 1, resample=Upsample(widths[i]) if i != 0 else None, cfg=cfg,
            )
            for i in reversed(range(n))
        )
        self.norm_out = _norm(widths[0], cfg.norm_groups)
        self.conv_out = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, z_BChw: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z_BChw))
        for level in self.levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ------------------------------------------------------------------------------------------------
# The VQ-VAE
# ------------------------------------------------------------------------------------------------
class VQVAE(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 3, padding=1)
        self.quantizer = MultiScaleQuantizer(
            cfg.vocab_size, cfg.z_channels, cfg.patch_nums, cfg.n_shared_phi, cfg.phi_ratio, cfg.beta
        )
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 3, padding=1)
        self.decoder = Decoder(cfg)
        if cfg.shortcut:  # the learnt paths start at zero: a fresh model is exactly the thumbnail round trip
            for conv in (self.quant_conv, self.decoder.conv_out):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def pixels_to_latent(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """The shortcut's encoder half: the area-downsampled image, tiled over the latent channels."""
        t_B3hw = F.avg_pool2d(x_B3HW, self.cfg.downsample)
        C = self.cfg.z_channels
        return t_B3hw.repeat(1, -(-C // 3), 1, 1)[:, :C]

    def latent_to_pixels(self, f_BChw: torch.Tensor) -> torch.Tensor:
        """The shortcut's decoder half: each colour's channel mean, bilinearly upsampled."""
        t_B3hw = torch.stack([f_BChw[:, c::3].mean(1) for c in range(3)], dim=1)
        return F.interpolate(t_B3hw, scale_factor=float(self.cfg.downsample), mode="bilinear", align_corners=False)

    def encode_raw(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Encoder output *before* quant_conv (plus the shortcut, if any): RestoreVAR's conditioning latent."""
        h = self.encoder(x_B3HW)
        return h + self.pixels_to_latent(x_B3HW) if self.cfg.shortcut else h

    def encode(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Continuous latent ``quant_conv(encoder(x))`` (plus the shortcut): what is quantized, the LRT's target."""
        f = self.quant_conv(self.encoder(x_B3HW))
        return f + self.pixels_to_latent(x_B3HW) if self.cfg.shortcut else f

    def decode_unclamped(self, f_BChw: torch.Tensor) -> torch.Tensor:
        """The decoder without the final clamp (training losses see values beyond [-1, 1])."""
        out = self.decoder(self.post_quant_conv(f_BChw))
        return out + self.latent_to_pixels(f_BChw) if self.cfg.shortcut else out

    def quantize(self, f_BChw: torch.Tensor, trace: bool = False) -> QuantizeOutput:
        return self.quantizer(f_BChw, trace=trace)

    def image_to_idx(self, x_B3HW: torch.Tensor) -> list[torch.Tensor]:
        return self.quantizer(self.encode(x_B3HW)).idx_list

    def decode(self, f_BChw: torch.Tensor) -> torch.Tensor:
        """Decode a continuous or discrete (``f_hat``) latent to an image in [-1, 1]."""
        return self.decode_unclamped(f_BChw).clamp(-1, 1)

    def idx_to_image(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        return self.decode(self.quantizer.idx_to_f_hat(idx_list))

    def forward(self, x_B3HW: torch.Tensor) -> tuple[torch.Tensor, QuantizeOutput]:
        """Autoencode through the quantizer; returns the reconstruction and the quantizer output."""
        q = self.quantize(self.encode(x_B3HW))
        return self.decode_unclamped(q.f_hat_BChw), q
