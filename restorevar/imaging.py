"""The one home of image math: conversions between uint8 pixels and the model's [-1, 1] tensors, PSNR, and the
low-frequency fidelity (PSNR of 8 x 8 thumbnails).

Conventions (BasicSR's, stated so that every caller agrees):
- the model works on float RGB in [-1, 1]; pixels on disk are uint8 RGB in [0, 255];
- ``to_uint8`` clamps to [-1, 1], maps to [0, 255] and rounds half to even (``torch.round``);
- ``psnr_per_image`` clamps both images to [-1, 1], measures on the [0, 1] scale (data range 1) over all
  pixels and channels of each image, in float64; identical images give +inf, never a clipped number.
  ``pooled_psnr`` does the same over a whole batch taken as one signal (one MSE for all pixels).
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def from_uint8(array_HW3: np.ndarray | Image.Image) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> float32 (3, H, W) in [-1, 1]."""
    a = np.asarray(array_HW3)
    if a.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {a.dtype}")
    return torch.from_numpy(a.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def from_uint8_batch(arrays_BHW3: np.ndarray) -> torch.Tensor:
    """uint8 RGB (B, H, W, 3) -> float32 (B, 3, H, W) in [-1, 1]."""
    a = np.asarray(arrays_BHW3)
    if a.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {a.dtype}")
    return torch.from_numpy(a.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) -> (H, W, 3) or (B, 3, H, W) -> (B, H, W, 3) uint8, from any device."""
    u = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return u.permute(1, 2, 0).numpy() if u.ndim == 3 else u.permute(0, 2, 3, 1).numpy()


def to_pil(x_3HW: torch.Tensor) -> Image.Image:
    return Image.fromarray(to_uint8(x_3HW))


def psnr_per_image(a_B3HW: torch.Tensor, b_B3HW: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image pair, float64 on the CPU, shape (B,); +inf where the images are equal."""
    if a_B3HW.shape != b_B3HW.shape:
        raise ValueError(f"PSNR of differently shaped images: {tuple(a_B3HW.shape)} vs {tuple(b_B3HW.shape)}")
    a = a_B3HW.detach().double().clamp(-1, 1)
    b = b_B3HW.detach().double().clamp(-1, 1)
    mse_B = (((a - b) / 2) ** 2).flatten(1).mean(1).cpu()
    return 10 * torch.log10(1.0 / mse_B)  # 1 / 0 = inf: equal images are reported as such


def mean_psnr(a_B3HW: torch.Tensor, b_B3HW: torch.Tensor) -> float:
    """Mean PSNR (dB) over a batch of per-image PSNRs; +inf as soon as one pair is identical."""
    return float(psnr_per_image(a_B3HW, b_B3HW).mean())


def pooled_psnr(a_B3HW: torch.Tensor, b_B3HW: torch.Tensor) -> float:
    """PSNR (dB) of a whole batch taken as one signal; +inf only when every pair is identical.

    Unlike ``mean_psnr`` it stays finite when only some pairs are identical, which suits comparing two
    implementations that agree exactly on some images and not on others.
    """
    if a_B3HW.shape != b_B3HW.shape:
        raise ValueError(f"PSNR of differently shaped images: {tuple(a_B3HW.shape)} vs {tuple(b_B3HW.shape)}")
    return float(psnr_per_image(a_B3HW.reshape(1, -1), b_B3HW.reshape(1, -1))[0])


# Low-frequency fidelity: the colours and tones of the image as a whole (what haze and low light change, and what a
# model that paints brown for green gets wrong whatever its fine detail), independent of detail and noise.
LOWFREQ_SIZE = 8


def thumbnail(x_B3HW: torch.Tensor, size: int = LOWFREQ_SIZE) -> torch.Tensor:
    """The ``size`` x ``size`` area-average thumbnail (each output pixel the mean of its block of pixels)."""
    return torch.nn.functional.adaptive_avg_pool2d(x_B3HW.detach().double().clamp(-1, 1), size)


def lowfreq_psnr_per_image(a_B3HW: torch.Tensor, b_B3HW: torch.Tensor, size: int = LOWFREQ_SIZE) -> torch.Tensor:
    """PSNR (dB, as ``psnr_per_image``) of the two images' ``size`` x ``size`` thumbnails, shape (B,)."""
    if a_B3HW.shape != b_B3HW.shape:
        raise ValueError(f"PSNR of differently shaped images: {tuple(a_B3HW.shape)} vs {tuple(b_B3HW.shape)}")
    return psnr_per_image(thumbnail(a_B3HW, size), thumbnail(b_B3HW, size))
