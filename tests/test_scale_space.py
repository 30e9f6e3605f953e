"""The scale swap on a constructed case: all scales swapped gives the other image's f_hat exactly, none
swapped changes nothing, and a coarse/fine split sits between the two. The stage's PSNR and its summary."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_tiny
from pipelines.scale_space import _psnr, summary_table
from restorevar.analysis import scale_swap_images, swap_scales


@pytest.fixture(scope="module")
def vqvae():
    return make_tiny().vqvae


def test_swapping_every_scale_gives_the_other_images_f_hat_and_none_changes_nothing(vqvae, images):
    deg, clean = images
    q = vqvae.quantizer
    idx_c, idx_d = vqvae.image_to_idx(clean), vqvae.image_to_idx(deg)
    K = len(idx_c)
    f_hat_d = vqvae.quantize(vqvae.encode(deg)).f_hat_BChw
    assert torch.equal(q.idx_to_f_hat(swap_scales(idx_c, idx_d, range(K))), q.idx_to_f_hat(idx_d))
    torch.testing.assert_close(q.idx_to_f_hat(swap_scales(idx_c, idx_d, range(K))), f_hat_d, rtol=0, atol=1e-6)
    assert torch.equal(q.idx_to_f_hat(swap_scales(idx_c, idx_d, set())), q.idx_to_f_hat(idx_c))
    mixed = swap_scales(idx_c, idx_d, {0, 2})
    assert mixed[0] is idx_d[0] and mixed[1] is idx_c[1] and mixed[2] is idx_d[2]


def test_decoded_swaps_and_bad_splits(vqvae, images):
    deg, clean = images
    out = scale_swap_images(vqvae, clean, deg, split=2)
    assert set(out) == {"clean", "degraded", "coarse_from_degraded", "fine_from_degraded"}
    torch.testing.assert_close(out["clean"], vqvae.idx_to_image(vqvae.image_to_idx(clean)))
    assert not torch.equal(out["coarse_from_degraded"], out["clean"])
    assert not torch.equal(out["fine_from_degraded"], out["clean"])
    with pytest.raises(ValueError, match="split must lie"):
        scale_swap_images(vqvae, clean, deg, split=0)
    with pytest.raises(ValueError, match="outside"):
        swap_scales([torch.zeros(1)], [torch.zeros(1)], {3})


def _old_psnr(a, b):  # the stage's own formula before it moved to restorevar.imaging
    mse = (((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2) ** 2).flatten(1).mean(1).double()
    return (10 * torch.log10(1 / mse.clamp_min(1e-10))).cpu().numpy()


def test_stage_psnr_matches_its_old_formula_and_reports_identical_images_as_inf(images):
    deg, clean = images
    np.testing.assert_allclose(_psnr(deg * 1.2, clean), _old_psnr(deg * 1.2, clean), rtol=0, atol=1e-4)
    same = _psnr(clean, clean.clone())
    assert np.isposinf(same).all() and np.all(_old_psnr(clean, clean) == 100.0)


def test_summary_table_is_strict_json_when_a_decoding_equals_the_other_image():
    inf = float("inf")
    rows = [{"pair": "restored", "swap": s, "dataset": "d", "degradation": "haze", "image_id": str(i),
             "psnr_to_clean": 20.0 + i, "psnr_to_other": other}
            for s, others in (("other", [inf, inf]), ("fine_from_other", [30.0, inf]), ("clean", [25.0, 27.0]))
            for i, other in enumerate(others)]
    rows.append({"pair": "degraded", "swap": "clean", "dataset": "d", "degradation": "rain", "image_id": "0",
                 "psnr_to_clean": 21.0, "psnr_to_other": 22.0})
    table = summary_table(pd.DataFrame(rows), 0.95)
    json.dumps(table, allow_nan=False)  # no Infinity or NaN tokens
    cell = {(t["pair"], t["swap"], t["degradation"], t["value"]): t for t in table}
    assert cell[("restored", "other", "haze", "psnr_to_other")] == {
        "pair": "restored", "swap": "other", "dataset": "d", "degradation": "haze", "value": "psnr_to_other",
        "mean": None, "ci": [None, None], "n": 2, "n_identical": 2}
    assert cell[("restored", "fine_from_other", "haze", "psnr_to_other")]["n_identical"] == 1
    assert cell[("restored", "fine_from_other", "haze", "psnr_to_other")]["mean"] is None
    clean = cell[("restored", "clean", "haze", "psnr_to_other")]
    assert clean["mean"] == 26.0 and clean["n_identical"] == 0 and clean["ci"][0] < 26.0 < clean["ci"][1]
    one = cell[("degraded", "clean", "rain", "psnr_to_clean")]
    assert one["mean"] == 21.0 and one["ci"] == [None, None]  # a single image has no interval
