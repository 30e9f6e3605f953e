"""Where does a degradation live in the token pyramid? Swap scales between two images' token maps.

The paper (Fig. 2, 9, 13) decodes a clean image's tokens with its coarse scales replaced by the degraded
image's, and with its fine scales replaced, and finds the degradation follows the coarse scales. Scales
``[0, split)`` are "coarse", ``[split, K)`` are "fine".
"""
from __future__ import annotations

import torch

SWAPS = ("clean", "degraded", "coarse_from_degraded", "fine_from_degraded")


def swap_scales(idx_a: list[torch.Tensor], idx_b: list[torch.Tensor], scales: set[int] | range) -> list[torch.Tensor]:
    """``idx_a`` with the maps of ``scales`` taken from ``idx_b``."""
    if len(idx_a) != len(idx_b):
        raise ValueError(f"token pyramids differ in depth: {len(idx_a)} and {len(idx_b)} scales")
    bad = [k for k in scales if not 0 <= k < len(idx_a)]
    if bad:
        raise ValueError(f"scale {bad[0]} is outside 0..{len(idx_a) - 1}")
    return [b if k in scales else a for k, (a, b) in enumerate(zip(idx_a, idx_b))]


@torch.no_grad()
def scale_swap_images(vqvae, clean_B3HW: torch.Tensor, degraded_B3HW: torch.Tensor,
                      split: int) -> dict[str, torch.Tensor]:
    """Decoded images (in [-1, 1]) for each entry of SWAPS: both pyramids unchanged, then the clean pyramid
    with its coarse (``< split``) or fine (``>= split``) scales taken from the degraded image."""
    K = len(vqvae.quantizer.patch_nums)
    if not 0 < split < K:
        raise ValueError(f"split must lie in 1..{K - 1} for {K} scales, got {split}")
    idx_c, idx_d = vqvae.image_to_idx(clean_B3HW), vqvae.image_to_idx(degraded_B3HW)
    pyramids = {"clean": idx_c, "degraded": idx_d,
                "coarse_from_degraded": swap_scales(idx_c, idx_d, range(split)),
                "fine_from_degraded": swap_scales(idx_c, idx_d, range(split, K))}
    return {name: vqvae.idx_to_image(idx) for name, idx in pyramids.items()}
