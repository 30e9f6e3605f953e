"""benchmarks/per_degradation.py: the per-degradation table on the unseen validation scenes."""
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


def test_bad_calls_answer_in_one_line(tmp_path, capsys):
    from benchmarks.per_degradation import main

    assert main(["--out", str(tmp_path / "o")]) == 2
    assert main(["--out", str(tmp_path / "o"), str(tmp_path / "missing.pt")]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["--out", str(tmp_path / "file"), str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "name a checkpoint" in err[0] and "missing.pt" in err[1]
    assert "choose another --out" in err[2]
