"""The embedded synthetic benchmark: determinism, disjoint scenes, and degradations that degrade."""
import hashlib
import json

import numpy as np
import pytest
from scipy.ndimage import laplace

from restorevar.cli import main
from restorevar.data.degrade import DEGRADATIONS, trajectory_kernel
from restorevar.data.photos import PHOTOS, load_photo, photos_for
from restorevar.data.synth import SynthConfig, synth


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    cfg = SynthConfig(size=32, train_per_degradation=2, test_per_degradation=1, seed=7)
    synth(tmp_path / "a", cfg, progress=False)
    synth(tmp_path / "b", cfg, progress=False)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b and len(a) == 2 * (5 * 2 + 7 * 1) + 3
    synth(tmp_path / "c", SynthConfig(size=32, train_per_degradation=2, test_per_degradation=1, seed=8), progress=False)
    assert _digest(tmp_path / "c") != a


def test_manifests_are_in_the_published_format_with_parameters(tmp_path):
    synth(tmp_path, SynthConfig(size=32, train_per_degradation=1, test_per_degradation=1), progress=False)
    train = json.loads((tmp_path / "train.json").read_text())
    test = json.loads((tmp_path / "test.json").read_text())
    assert {e["degradation"] for e in train} == {"Haze", "Rain", "Snow", "Low-light", "Motion blur"}
    assert {e["dataset"] for e in test} >= {"synth-cdd", "synth-lolblur"}  # mixtures only in test
    assert all(e["degradation"] == "Mixed" for e in test if e["dataset"] in ("synth-cdd", "synth-lolblur"))
    for e in train + test:
        assert {"image_path", "target_path", "degradation", "dataset"} <= set(e)
        assert isinstance(e["params"], dict) and e["params"]
        assert (tmp_path / e["image_path"]).exists() and (tmp_path / e["target_path"]).exists()
    train_scenes = {e["source_photo"] for e in train}
    test_scenes = {e["source_photo"] for e in test}
    assert not train_scenes & test_scenes


def test_scene_split_is_disjoint_and_photos_ship_with_packages():
    train, test = {p.name for p in photos_for("train")}, {p.name for p in photos_for("test")}
    assert train and test and not train & test
    assert {"motorcycle_left", "motorcycle_right"} <= train  # a stereo pair is one scene
    for p in PHOTOS:
        img = load_photo(p)
        assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 256


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def _clean_patches(n=4, size=96):
    """Centre crops of the first few photographs."""
    out = []
    for p in PHOTOS[:n]:
        img = load_photo(p)
        top, left = img.shape[0] // 2 - size // 2, img.shape[1] // 2 - size // 2
        out.append(np.ascontiguousarray(img[top:top + size, left:left + size]))
    return out


@pytest.mark.parametrize("name", list(DEGRADATIONS))
def test_each_degradation_degrades_and_is_seeded(name):
    fn = DEGRADATIONS[name][0]
    for i, clean in enumerate(_clean_patches()):
        out, params = fn(clean, np.random.default_rng(i))
        again, params2 = fn(clean, np.random.default_rng(i))
        assert np.array_equal(out, again) and params == params2
        assert out.shape == clean.shape and out.dtype == np.uint8
        assert _psnr(out, clean) < 30, f"{name} barely changed the image"
        json.dumps(params)  # parameters are recorded as plain JSON


def _luma(x):
    return x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_degradations_move_in_the_expected_direction():
    for i, clean in enumerate(_clean_patches()):
        def rng(seed=100 + i):
            return np.random.default_rng(seed)

        dark, _ = DEGRADATIONS["lowlight"][0](clean, rng())
        assert _luma(dark).mean() < 0.6 * _luma(clean).mean()
        hazy, _ = DEGRADATIONS["haze"][0](clean, rng())
        assert _luma(hazy).std() < _luma(clean).std()  # lower contrast
        blurred, _ = DEGRADATIONS["motion_blur"][0](clean, rng())
        assert laplace(_luma(blurred)).var() < 0.5 * laplace(_luma(clean)).var()  # less high-frequency energy


def test_trajectory_kernel_is_normalised_and_nontrivial():
    k = trajectory_kernel(15, np.random.default_rng(0))
    assert k.shape == (15, 15) and abs(k.sum() - 1) < 1e-5 and (k > 0).sum() > 10


def test_synth_then_check_passes_via_cli(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--size", "32", "--train-per-degradation", "2",
                 "--test-per-degradation", "1", "--quiet"]) == 0
    assert main(["data", "check", str(tmp_path / "train.json"), "--against", str(tmp_path / "test.json")]) == 0
    assert main(["data", "check", str(tmp_path / "test.json")]) == 0
    out = capsys.readouterr().out
    assert "synth-haze" in out and "synth-lolblur" in out


def test_bad_synth_parameters_are_refused(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--size", "4"]) == 2
    assert "--size must be between" in capsys.readouterr().err


SMALL = ["--size", "16", "--train-per-degradation", "1", "--test-per-degradation", "1", "--quiet"]


def test_synth_refuses_a_non_empty_folder_and_overwrite_replaces_only_its_own_files(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["data", "synth", "--out", str(out), *SMALL]) == 0
    before = _digest(out)
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["data", "synth", "--out", str(out), *SMALL, "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not empty" in err[0] and "--overwrite" in err[0]
    assert {k: v for k, v in _digest(out).items() if k != "notes.txt"} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]  # no staging folder left behind
    assert main(["data", "synth", "--out", str(out), *SMALL, "--seed", "1", "--overwrite"]) == 0
    after = _digest(out)
    assert after["train.json"] != before["train.json"] and (out / "notes.txt").read_text() == "mine"
    assert set(after) == set(before) | {"notes.txt"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]


def test_overwrite_never_replaces_a_folder_that_is_not_a_benchmark(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "keep.png").write_bytes(b"user data")
    assert main(["data", "synth", "--out", str(tmp_path), *SMALL, "--overwrite"]) == 2
    assert "no synth_info.json" in capsys.readouterr().err
    assert (tmp_path / "train" / "keep.png").read_bytes() == b"user data"


def test_synth_out_that_is_a_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "f.txt"
    f.write_text("x")
    assert main(["data", "synth", "--out", str(f), *SMALL]) == 2
    assert main(["data", "synth", "--out", str(f / "sub"), *SMALL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "is a file" in err[0] and "cannot create a folder beside" in err[1]
    assert f.read_text() == "x"


def test_an_interrupted_synth_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    import restorevar.data.synth as synth_mod

    out = tmp_path / "bench"
    calls = []

    def failing_write_png(path, array):
        calls.append(path)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real(path, array)

    real = synth_mod.write_png
    monkeypatch.setattr(synth_mod, "write_png", failing_write_png)
    with pytest.raises(KeyboardInterrupt):
        synth(out, SynthConfig(size=16, train_per_degradation=2, test_per_degradation=1), progress=False)
    assert list(tmp_path.iterdir()) == []  # neither a half-written benchmark nor its staging folder
