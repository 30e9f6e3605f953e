"""Multi-scale residual vector quantizer (VAR's tokenizer core).

The latent ``f`` is explained coarse-to-fine: at scale k the residual is area-downsampled to
``pn_k x pn_k``, snapped to its nearest codebook entries, upsampled back (bicubic), passed through
a partially shared Phi conv and subtracted. Index maps of all scales together are the image's tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------------------------------------
# Phi: the partially shared residual convs
# ------------------------------------------------------------------------------------------------
class Phi(nn.Conv2d):
    """``Phi(h) = (1 - r) * h + r * conv3x3(h)``: keeps the codebook vector while adding local context."""

    def __init__(self, channels: int, ratio: float = 0.5):
        super().__init__(channels, channels, kernel_size=3, padding=1)
        self.ratio = ratio

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return h_BChw.mul(1 - self.ratio) + super().forward(h_BChw).mul(self.ratio)


class SharedPhi(nn.Module):
    """``n_shared`` Phi convs; scale k uses the one whose tick lies nearest ``k / (K - 1)``."""

    def __init__(self, channels: int, n_shared: int, ratio: float = 0.5):
        super().__init__()
        self.convs = nn.ModuleList(Phi(channels, ratio) for _ in range(n_shared))
        # Ticks and the nearest-tick rule follow VAR, so published Phi weights land on the right scales.
        self.ticks = np.linspace(1 / (3 * n_shared), 1 - 1 / (3 * n_shared), n_shared)

    def index_for_scale(self, k: int, n_scales: int) -> int:
        at = k / (n_scales - 1) if n_scales > 1 else 0.0
        return int(np.argmin(np.abs(self.ticks - at)))

    def forward(self, h_BChw: torch.Tensor, k: int, n_scales: int) -> torch.Tensor:
        return self.convs[self.index_for_scale(k, n_scales)](h_BChw)


# ------------------------------------------------------------------------------------------------
# The quantizer
# ------------------------------------------------------------------------------------------------
@dataclass
class QuantizeOutput:
    f_hat_BChw: torch.Tensor  # straight-through quantized latent (gradient flows to f)
    idx_list: list[torch.Tensor]  # per scale, (B, pn, pn) long
    vq_loss: torch.Tensor  # scalar
    z_list: list[torch.Tensor] | None = None  # per scale, the (B, C, pn, pn) map that was looked up
    f_hat_list: list[torch.Tensor] | None = None  # per scale, f_hat after adding that scale


class MultiScaleQuantizer(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        channels: int,
        patch_nums: tuple[int, ...],
        n_shared_phi: int = 4,
        phi_ratio: float = 0.5,
        beta: float = 0.25,
    ):
        super().__init__()
        self.vocab_size, self.channels, self.patch_nums, self.beta = vocab_size, channels, patch_nums, beta
        self.codebook = nn.Embedding(vocab_size, channels)
        self.phi = SharedPhi(channels, n_shared_phi, phi_ratio)
        # Per-scale running codebook usage; a training diagnostic, stored so published VAEs map 1:1.
        self.register_buffer("usage_ema_SV", torch.zeros(len(patch_nums), vocab_size))

    @property
    def n_scales(self) -> int:
        return len(self.patch_nums)

    def lookup(self, z_BChw: torch.Tensor) -> torch.Tensor:
        """Nearest codebook index (plain L2) for every position: ``(B, h, w)``."""
        B, C, h, w = z_BChw.shape
        z_NC = z_BChw.permute(0, 2, 3, 1).reshape(-1, C)
        e_VC = self.codebook.weight
        d_NV = z_NC.pow(2).sum(1, keepdim=True) + e_VC.pow(2).sum(1) - 2 * z_NC @ e_VC.T
        return d_NV.argmin(dim=1).view(B, h, w)

    def embed(self, idx_Bhw: torch.Tensor) -> torch.Tensor:
        return self.codebook(idx_Bhw).permute(0, 3, 1, 2)

    def scale_update(self, h_BChw: torch.Tensor, k: int, H: int, W: int) -> torch.Tensor:
        """The residual contribution of scale k at full latent size: Phi_k(bicubic(E[idx_k]))."""
        if k != self.n_scales - 1:
            h_BChw = F.interpolate(h_BChw, size=(H, W), mode="bicubic")
        return self.phi(h_BChw, k, self.n_scales)

    def forward(self, f_BChw: torch.Tensor, trace: bool = False) -> QuantizeOutput:
        H, W = f_BChw.shape[-2:]
        if H != self.patch_nums[-1] or W != self.patch_nums[-1]:
            raise ValueError(f"latent is {H}x{W} but the last patch_num is {self.patch_nums[-1]}")
        f_no_grad = f_BChw.detach()
        f_rest = f_no_grad.clone()
        f_hat = torch.zeros_like(f_rest)
        vq_loss = f_BChw.new_zeros(())
        idx_list, z_list, f_hat_list = [], [], []
        for k, pn in enumerate(self.patch_nums):
            z = f_rest if k == self.n_scales - 1 else F.interpolate(f_rest, size=(pn, pn), mode="area")
            idx = self.lookup(z)
            h = self.scale_update(self.embed(idx), k, H, W)
            f_hat = f_hat + h
            f_rest = f_rest - h
            idx_list.append(idx)
            if trace:
                z_list.append(z)
                f_hat_list.append(f_hat.detach().clone())
            if self.training:
                with torch.no_grad():
                    hits = torch.bincount(idx.flatten(), minlength=self.vocab_size).float()
                    self.usage_ema_SV[k].mul_(0.99).add_(hits, alpha=0.01)
            vq_loss = vq_loss + self.beta * F.mse_loss(f_hat.detach(), f_BChw) + F.mse_loss(f_hat, f_no_grad)
        vq_loss = vq_loss / self.n_scales
        f_hat_st = (f_hat.detach() - f_no_grad) + f_BChw  # straight-through estimator
        return QuantizeOutput(f_hat_st, idx_list, vq_loss, z_list if trace else None, f_hat_list if trace else None)

    # -- token-level helpers used by the transformer --------------------------------------------
    def idx_to_f_hat(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Rebuild ``f_hat`` from per-scale index maps (equals the value accumulated in forward)."""
        H = W = self.patch_nums[-1]
        f_hat = None
        for k, idx in enumerate(idx_list):
            h = self.scale_update(self.embed(idx), k, H, W)
            f_hat = h if f_hat is None else f_hat + h
        assert f_hat is not None
        return f_hat

    def idx_to_teacher_input(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Next-scale inputs for teacher forcing: ``(B, L - pn_0^2, C)``.

        Scale k+1's input is ``f_hat`` after scales 0..k, area-downsampled to ``pn_{k+1}``.
        """
        H = W = self.patch_nums[-1]
        B = idx_list[0].shape[0]
        f_hat = self.codebook.weight.new_zeros(B, self.channels, H, W)
        inputs = []
        for k in range(self.n_scales - 1):
            f_hat = f_hat + self.scale_update(self.embed(idx_list[k]), k, H, W)
            pn = self.patch_nums[k + 1]
            nxt = F.interpolate(f_hat, size=(pn, pn), mode="area")
            inputs.append(nxt.flatten(2).transpose(1, 2))
        return torch.cat(inputs, dim=1)

    def next_input(
        self, k: int, f_hat_BChw: torch.Tensor, h_BChw: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference step: add scale k's codes to ``f_hat``; return it and the next scale's input map."""
        H = W = self.patch_nums[-1]
        f_hat_BChw = f_hat_BChw + self.scale_update(h_BChw, k, H, W)
        if k == self.n_scales - 1:
            return f_hat_BChw, f_hat_BChw
        pn = self.patch_nums[k + 1]
        return f_hat_BChw, F.interpolate(f_hat_BChw, size=(pn, pn), mode="area")

    def multiscale_embeddings(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Concatenated codebook vectors of every scale, ``(B, L, C)``: the discrete conditioning tokens."""
        return torch.cat([self.codebook(idx).flatten(1, 2) for idx in idx_list], dim=1)
