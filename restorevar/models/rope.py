"""2D rotary position embeddings, normalised across scales (spec section 3).

A token at (r, c) of a ``pn x pn`` scale sits at ``(r * G / pn, c * G / pn)`` on the largest grid
``G``, top-left aligned, so every scale shares one coordinate frame. The first half of each head's
dims rotates with the row, the second half with the column, in adjacent pairs.
"""
from __future__ import annotations

import torch


def axis_frequencies(head_dim: int, theta: float = 1e4) -> torch.Tensor:
    """``head_dim // 4`` frequencies ``theta^(-4i / head_dim)``, shared by the row and column halves."""
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs a head dim divisible by 4, got {head_dim}")
    i = torch.arange(head_dim // 4, dtype=torch.float64)
    return theta ** (-4.0 * i / head_dim)


def scale_positions(patch_nums: tuple[int, ...], grid: int) -> torch.Tensor:
    """(row, col) of every token of every scale on the ``grid x grid`` frame: ``(L, 2)`` float64."""
    out = []
    for pn in patch_nums:
        r, c = torch.meshgrid(torch.arange(pn, dtype=torch.float64), torch.arange(pn, dtype=torch.float64), indexing="ij")
        out.append(torch.stack([r.flatten(), c.flatten()], dim=1) * (grid / pn))
    return torch.cat(out, dim=0)


def rope_cos_sin(pos_L2: torch.Tensor, head_dim: int, theta: float = 1e4) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation angles per token and per dim pair: ``cos, sin`` of shape ``(L, head_dim // 2)``, fp32."""
    f = axis_frequencies(head_dim, theta)
    ang_LP = torch.cat([pos_L2[:, :1] * f, pos_L2[:, 1:2] * f], dim=1)
    return ang_LP.cos().float(), ang_LP.sin().float()


def apply_rope(x_BHLD: torch.Tensor, cos_LP: torch.Tensor, sin_LP: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs ``(x[2p], x[2p+1])`` by the angle of pair p."""
    x_e, x_o = x_BHLD[..., 0::2].float(), x_BHLD[..., 1::2].float()
    out_e = x_e * cos_LP - x_o * sin_LP
    out_o = x_e * sin_LP + x_o * cos_LP
    return torch.stack([out_e, out_o], dim=-1).flatten(-2).to(x_BHLD.dtype)
