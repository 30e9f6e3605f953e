"""Map PromptIR's published all-in-one checkpoint (a PyTorch Lightning ``model.ckpt`` whose module holds the network
as ``net``) onto this package's PromptIR, ``paper`` preset.

Every published key is renamed by the first matching rule; nothing is guessed. A key no rule names, a renamed key
our model lacks, a shape that differs and a parameter of ours that no key fills are each errors, listed together.
The published names and shapes are shipped (``reference/promptir_official_state_dict_shapes.json``, facts read
off the published model definition), so the mapping is checked in any clone without the 140 MB file.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from restorevar.convert import rename_by_rules
from restorevar.errors import UserError

OFFICIAL_SHAPES = Path(__file__).resolve().parents[1] / "reference" / "promptir_official_state_dict_shapes.json"

# inside every Restormer block: the published names of the norms, MDTA and the gated feed-forward
_BLOCK = [(r"norm(\d)\.body\.(weight|bias)", r"norm\1.\2"), (r"attn\.(temperature|qkv\.weight)", r"attn.\1"),
          (r"attn\.qkv_dwconv\.weight", "attn.qkv_dw.weight"), (r"attn\.project_out\.weight", "attn.proj.weight"),
          (r"ffn\.project_in\.weight", "ffn.expand.weight"), (r"ffn\.dwconv\.weight", "ffn.dw.weight"),
          (r"ffn\.project_out\.weight", "ffn.proj.weight")]
# where the blocks sit: published prefix -> ours
_PLACES = [(r"encoder_level(\d)\.(\d+)\.", r"enc\1.\2."), (r"decoder_level(\d)\.(\d+)\.", r"dec\1.\2."),
           (r"latent\.(\d+)\.", r"latent.\1."), (r"refinement\.(\d+)\.", r"refine.\1."),
           (r"noise_level(\d)\.", r"interact\1.block.")]
# the rest, one parameter each; the published resampling layers are numbered by the pair of levels they join
_SINGLE = [(r"patch_embed\.proj\.weight", "embed.weight"), (r"output\.weight", "out.weight"),
           (r"down1_2\.body\.0\.weight", "down1.0.weight"), (r"down2_3\.body\.0\.weight", "down2.0.weight"),
           (r"down3_4\.body\.0\.weight", "down3.0.weight"), (r"up4_3\.body\.0\.weight", "up3.0.weight"),
           (r"up3_2\.body\.0\.weight", "up2.0.weight"), (r"up2_1\.body\.0\.weight", "up1.0.weight"),
           (r"reduce_chan_level(\d)\.weight", r"fuse\1.weight"),
           (r"reduce_noise_level(\d)\.weight", r"interact\1.reduce.weight"),
           (r"prompt(\d)\.prompt_param", r"prompt\1.prompts_NCSS"),
           (r"prompt(\d)\.linear_layer\.(weight|bias)", r"prompt\1.weights.\2"),
           (r"prompt(\d)\.conv3x3\.weight", r"prompt\1.mix.weight"),
           # held by the published model, never called by its forward pass
           (r"chnl_reduce1\.weight", "unused.0.weight"), (r"chnl_reduce2\.weight", "unused.1.weight"),
           (r"chnl_reduce3\.weight", "unused.2.weight"), (r"reduce_noise_channel_1\.weight", "unused.3.weight"),
           (r"reduce_noise_channel_2\.weight", "unused.4.weight"), (r"reduce_noise_channel_3\.weight", "unused.5.weight")]


def rename(key: str) -> str | None:
    """Our name for a published key (the Lightning module's ``net.`` prefix removed first), or None."""
    key = key.removeprefix("net.")
    if (ours := rename_by_rules(key, _SINGLE)) is not None:
        return ours
    for pat, repl in _PLACES:  # a block's place, then its parameter inside the block
        if (m := re.match(pat, key)) and (inner := rename_by_rules(key[m.end():], _BLOCK)) is not None:
            return m.expand(repl) + inner
    return None


def convert_promptir(sd: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Our state dict from a published one; ``expected`` is our model's {name: shape}. Any problem raises, naming
    the first and counting all."""
    out: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, t in sd.items():
        ours = rename(key)
        if ours is None or ours not in expected:
            problems.append(f"{key}: no counterpart" + ("" if ours is None else f" ({ours})"))
            continue
        if ours.endswith("prompts_NCSS") and t.dim() == 5 and t.shape[0] == 1:
            t = t[0]  # the published prompts carry a batch axis of one
        if tuple(t.shape) != tuple(expected[ours]):
            problems.append(f"{key}: shape {tuple(t.shape)}, ours {ours} is {tuple(expected[ours])}")
            continue
        if ours in out:
            problems.append(f"{key}: {ours} is filled twice")
            continue
        out[ours] = t
    problems += [f"{k}: no published key fills it" for k in expected if k not in out]
    if problems:
        raise UserError(f"not PromptIR's published all-in-one model (paper preset): {problems[0]} "
                        f"({len(problems)} problem(s) in all)")
    return out


def official_shapes() -> dict[str, list[int]]:
    """The published checkpoint's {key: shape}, as shipped."""
    return json.loads(OFFICIAL_SHAPES.read_text(encoding="utf-8"))["net"]
