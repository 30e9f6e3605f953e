"""The paper preset matches Tables 4 and 10 of the paper, and VAR-d16 as published; counted on the meta device
(no memory, no init) and from the shipped shape manifest of the published checkpoints."""
import json
import math
import re

import pytest
import torch

from restorevar.convert import OFFICIAL_SHAPES
from restorevar.models import RestoreVAR, get_preset


def _counts(overrides=()):
    with torch.device("meta"):
        m = RestoreVAR(get_preset("paper", list(overrides)))
    return {name: sum(p.numel() for p in getattr(m, name).parameters()) / 1e6
            for name in ("vqvae", "transformer", "refiner")}


def test_paper_counts_match_table_10():
    c = _counts()
    assert c["transformer"] == pytest.approx(273.986, abs=0.01)
    assert c["refiner"] == pytest.approx(22.968, abs=0.01)
    assert c["vqvae"] == pytest.approx(108.948, abs=0.01)


def test_ablation_refiner_counts_match_table_4():
    assert _counts(["refiner.kind=lrt_no_last_block"])["refiner"] == pytest.approx(14.61, abs=0.01)
    assert _counts(["refiner.kind=hart_mlp"])["refiner"] == pytest.approx(36.06, abs=0.05)
    assert _counts(["refiner.kind=none"])["refiner"] == 0


# Keys of the published var_d16 (restorevar/reference manifest) by role, named independently of convert.py's
# renaming rules so that this count does not just repeat them.
_VAR_BUFFERS = re.compile(r"attn_bias_for_masking|lvl_1L|blocks\.\d+\.attn\.zero_k_bias")
_VAR_ADALN = re.compile(r"(blocks\.\d+|head_nm)\.ada_lin\.1\.(weight|bias)")
_VAR_ABSOLUTE_POSITIONS = {"pos_1LC", "pos_start"}  # replaced by 2D RoPE, which has no parameters
# What RestoreVAR adds to VAR: cross-attention in every block and the conditioning embeddings.
_OURS_ADDED = re.compile(r"blocks\.\d+\.cross_attn\..+|(cond_proj|cond_embed|cond_lvl_embed|sos_cond_embed)\.\w+|sos_gain")


def _var_d16_params() -> dict[str, int]:
    shapes = json.loads(OFFICIAL_SHAPES.read_text())["checkpoints"]["var_d16"]
    return {k: math.prod(s) for k, s in shapes.items() if not _VAR_BUFFERS.fullmatch(k)}


def test_var_d16_counts_match_the_paper():
    var = _var_d16_params()
    assert sum(var.values()) / 1e6 == pytest.approx(310.28, abs=0.005)
    adaln = {k: n for k, n in var.items() if _VAR_ADALN.fullmatch(k)}
    assert len(adaln) == 2 * (16 + 1)  # weight and bias in every block and in the head's norm
    assert sum(adaln.values()) / 1e6 == pytest.approx(102.86, abs=0.005)  # what removing AdaLN saves


def test_paper_transformer_is_var_d16_without_adaln_plus_what_restorevar_adds():
    var = _var_d16_params()
    removed = sum(n for k, n in var.items() if _VAR_ADALN.fullmatch(k) or k in _VAR_ABSOLUTE_POSITIONS)
    with torch.device("meta"):
        ours = dict(RestoreVAR(get_preset("paper")).transformer.named_parameters())
    added = {k: p.numel() for k, p in ours.items() if _OURS_ADDED.fullmatch(k)}
    assert any(".cross_attn." in k for k in added) and "cond_embed.weight" in added
    assert sum(p.numel() for p in ours.values()) == sum(var.values()) - removed + sum(added.values())
