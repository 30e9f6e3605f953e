"""Carry weights across image sizes: the positions ablation pre-trains at a small size, then fine-tunes
at a larger one (paper Fig. 11, 256 -> 512 px).

The convolutions of the VQ-VAE and every transformer matrix are size-independent. What depends on the
scale schedule ``patch_nums`` is per-scale: the quantizer's usage statistics, the level embeddings and,
for absolute positions (APE), the position tables. A scale present in both schedules keeps its entries
exactly; a new scale is initialised from the finest source scale (level embedding copied, position grid
resized bicubically), which is the usual way to grow APE. RoPE-2D needs nothing: its angles are buffers
recomputed from the new schedule.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

RESOLUTION_KEYS = ("image_size", "patch_nums")


def _grid(table_1NC: torch.Tensor, pn: int, to: int) -> torch.Tensor:
    """A ``pn x pn`` table of vectors resized to ``to x to``; returns ``(1, to*to, C)``."""
    if pn == to:
        return table_1NC
    C = table_1NC.shape[-1]
    g_1Cpp = table_1NC.reshape(1, pn, pn, C).permute(0, 3, 1, 2).float()
    out = F.interpolate(g_1Cpp, size=(to, to), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(1, to * to, C).to(table_1NC.dtype)


def _split(table_1LC: torch.Tensor, patch_nums: tuple[int, ...]) -> dict[int, torch.Tensor]:
    out, begin = {}, 0
    for pn in patch_nums:
        out[pn] = table_1LC[:, begin:begin + pn * pn]
        begin += pn * pn
    if begin != table_1LC.shape[1]:
        raise ValueError(f"a table of {table_1LC.shape[1]} positions does not match the scales {patch_nums}")
    return out


def grow_positions(table_1LC: torch.Tensor, src: tuple[int, ...], dst: tuple[int, ...]) -> torch.Tensor:
    """A per-scale position table for ``src`` scales rewritten for ``dst`` scales."""
    per = _split(table_1LC, src)
    finest = max(src)
    return torch.cat([per[pn] if pn in per else _grid(per[finest], finest, pn) for pn in dst], dim=1)


def grow_levels(weight_KC: torch.Tensor, src: tuple[int, ...], dst: tuple[int, ...]) -> torch.Tensor:
    """Rows per scale (level embeddings, usage statistics): shared scales kept, new ones from the finest."""
    row = {pn: weight_KC[k] for k, pn in enumerate(src)}
    return torch.stack([row.get(pn, weight_KC[len(src) - 1]) for pn in dst])


def resize_vqvae_state(sd: dict[str, torch.Tensor], src: tuple[int, ...], dst: tuple[int, ...]) -> dict:
    out = dict(sd)
    for k, v in sd.items():
        if k.endswith("usage_ema_SV"):
            out[k] = torch.zeros(len(dst), v.shape[1], dtype=v.dtype)  # a diagnostic: restart it
    return out


def resize_transformer_state(sd: dict[str, torch.Tensor], src: tuple[int, ...], dst: tuple[int, ...],
                             conditioning: str) -> dict:
    """A transformer state dict for scales ``src`` rewritten for ``dst`` (either direction)."""
    src, dst = tuple(src), tuple(dst)
    if src[0] != dst[0]:
        raise ValueError(f"the first scale must match to carry the start token: {src[0]} vs {dst[0]}")
    out = dict(sd)
    out["lvl_embed.weight"] = grow_levels(sd["lvl_embed.weight"], src, dst)
    if "pos_1LC" in sd:
        out["pos_1LC"] = grow_positions(sd["pos_1LC"], src, dst)
    if conditioning == "discrete":
        out["cond_lvl_embed.weight"] = grow_levels(sd["cond_lvl_embed.weight"], src, dst)
        if "cond_pos_1NC" in sd:
            out["cond_pos_1NC"] = grow_positions(sd["cond_pos_1NC"], src, dst)
    elif "cond_pos_1NC" in sd:  # continuous: one grid of the finest latent
        out["cond_pos_1NC"] = _grid(sd["cond_pos_1NC"], max(src), max(dst))
    return out
