"""Carrying weights from a small image size to a larger one (the positions ablation's fine-tuning)."""
import pytest
import torch

from restorevar.checkpoint import load_checkpoint, load_components, save_checkpoint
from restorevar.errors import UserError
from restorevar.models import RestoreVAR, get_preset
from restorevar.models.resize import grow_levels, grow_positions, resize_transformer_state

SMALL = ["vqvae.image_size=16", "vqvae.patch_nums=[1,2,3,4]"]  # tiny at half size: latent 4 instead of 8
BIG_PN, SMALL_PN = (1, 2, 3, 4, 6, 8), (1, 2, 3, 4)


def _scale(table_1LC, patch_nums, pn):
    begin = sum(p * p for p in patch_nums[:patch_nums.index(pn)])
    return table_1LC[:, begin:begin + pn * pn]


def test_grow_positions_keeps_shared_scales_and_resizes_the_finest_for_new_ones():
    torch.manual_seed(0)
    t = torch.randn(1, sum(p * p for p in SMALL_PN), 5)
    g = grow_positions(t, SMALL_PN, BIG_PN)
    assert g.shape == (1, sum(p * p for p in BIG_PN), 5)
    for pn in SMALL_PN:
        assert torch.equal(_scale(g, BIG_PN, pn), _scale(t, SMALL_PN, pn))
    # a constant grid stays constant under bicubic resizing: new scales really come from the finest one
    t[:, -16:] = 2.5
    assert torch.allclose(_scale(grow_positions(t, SMALL_PN, BIG_PN), BIG_PN, 8), torch.full((1, 64, 5), 2.5))
    assert torch.equal(grow_positions(t, SMALL_PN, SMALL_PN), t)


def test_grow_levels_copies_the_finest_row_into_new_scales():
    w = torch.arange(8.0).reshape(4, 2)
    g = grow_levels(w, SMALL_PN, BIG_PN)
    assert torch.equal(g[:4], w) and torch.equal(g[4], w[3]) and torch.equal(g[5], w[3])


@pytest.mark.parametrize("positions", ["ape", "rope2d"])
@pytest.mark.parametrize("conditioning", ["continuous", "discrete"])
def test_a_small_size_checkpoint_loads_into_the_larger_model(tmp_path, positions, conditioning):
    torch.manual_seed(0)
    var = [f"transformer.positions={positions}", f"transformer.conditioning={conditioning}"]
    small = RestoreVAR(get_preset("tiny", SMALL + var))
    path = tmp_path / "small.pt"
    save_checkpoint(path, config=small.cfg, components={"vqvae": small.vqvae.state_dict(),
                                                       "transformer": small.transformer.state_dict()})
    big = RestoreVAR(get_preset("tiny", var))
    ck = load_checkpoint(path)
    with pytest.raises(UserError, match="vqvae.image_size"):
        load_components(big, ck, ["transformer"], path)
    load_components(big, ck, ["vqvae", "transformer"], path, any_resolution=True)

    s, b = small.transformer.state_dict(), big.transformer.state_dict()
    for k, v in s.items():  # every size-independent weight carried over exactly
        if v.shape == b[k].shape and k not in ("cond_pos_1NC",):
            assert torch.equal(v, b[k]), k
    if positions == "ape":
        for pn in SMALL_PN:
            assert torch.equal(_scale(b["pos_1LC"], BIG_PN, pn), _scale(s["pos_1LC"], SMALL_PN, pn))
    sv, bv = small.vqvae.state_dict(), big.vqvae.state_dict()
    assert all(torch.equal(sv[k], bv[k]) for k in sv if "usage_ema" not in k)
    assert bv["quantizer.usage_ema_SV"].shape[0] == len(BIG_PN)
    logits, target = big.teacher_forcing(torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1)
    assert logits.shape[:2] == target.shape == (2, sum(p * p for p in BIG_PN))


def test_the_start_scale_must_match():
    with pytest.raises(ValueError, match="first scale"):
        resize_transformer_state({"lvl_embed.weight": torch.zeros(2, 3)}, (1, 2), (2, 4), "continuous")
