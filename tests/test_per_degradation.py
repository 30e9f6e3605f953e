"""benchmarks/per_degradation.py: the per-degradation table on the unseen validation scenes."""
import pytest
import torch

from conftest import make_tiny
from restorevar.imaging import lowfreq_psnr_per_image, psnr_per_image


def test_the_table_is_each_methods_mean_per_degradation(images):
    from benchmarks.per_degradation import evaluate

    m = make_tiny(["refiner.kind=none"])
    deg, clean = images
    batches = [{"degraded": deg, "clean": clean, "degradation": [1, 5]},
               {"degraded": clean, "clean": clean, "degradation": [5, 5]}]  # an identity pair: input = clean
    table = evaluate(m, batches)
    assert set(table) == {"haze", "motion_blur"}
    haze, blur = table["haze"], table["motion_blur"]
    assert haze["input"]["n"] == 1 and blur["input"]["n"] == 3
    p = psnr_per_image(deg, clean)
    assert haze["input"]["psnr"] == round(float(p[0]), 2)
    assert haze["input"]["lowfreq_psnr"] == round(float(lowfreq_psnr_per_image(deg, clean)[0]), 2)
    # the refiner 'none' passes the tokens through: restored and tokens-only agree
    assert haze["restored"] == haze["tokens"]
    assert blur["input"]["psnr"] > haze["input"]["psnr"]  # two of its three pairs are perfect (capped PSNR)
    with torch.no_grad():  # the autoencoder's ceiling: the input's continuous latent decoded, no quantization
        auto = m.vqvae.decode(m.vqvae.encode(deg))
    assert haze["autoencoded"]["psnr"] == round(float(psnr_per_image(auto, clean)[0]), 2)
    assert haze["autoencoded"] != haze["copy_input"]


def test_zero_empties_the_named_condition_modules_and_refuses_others():
    from benchmarks.per_degradation import zero_modules
    from restorevar.errors import UserError

    m = make_tiny(["transformer.condition_inject=colocated_image_shift", "transformer.conditioning=discrete"])
    t = m.transformer
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.1)
    zero_modules(t, "cond_shift_h, cond_shift_img")
    assert all(float(p.abs().max()) == 0 for mod in (t.cond_shift_h, t.cond_shift_img) for p in mod.parameters())
    assert float(t.cond_shift_c.weight.abs().max()) > 0
    with pytest.raises(UserError, match="no module 'cond_shift_x'"):
        zero_modules(t, "cond_shift_x")
    with pytest.raises(UserError, match="no module 'lvl_L'"):  # a buffer, not a module with weights
        zero_modules(t, "lvl_L")


def test_bad_calls_answer_in_one_line(tmp_path, capsys):
    from benchmarks.per_degradation import main

    assert main(["--out", str(tmp_path / "o")]) == 2
    assert main(["--out", str(tmp_path / "o"), str(tmp_path / "missing.pt")]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["--out", str(tmp_path / "file"), str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "name a checkpoint" in err[0] and "missing.pt" in err[1]
    assert "choose another --out" in err[2]
