"""Every dataset adapter on a tiny fake tree that mimics the real layout."""
import json
import zlib

import numpy as np
import pytest
from PIL import Image

from restorevar.cli import main
from restorevar.data.fetch import is_complete
from restorevar.data.manifest import check_manifest
from restorevar.data.registry import REGISTRY, fetch_dataset


def _img(path, seed=0, ext=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(path)


def _pairs(root, inp, gt, names, gt_names=None):
    # seeded by the folder, so no two folders hold the same picture (a train/test repeat is a finding)
    base = zlib.crc32(inp.encode()) % 10_000
    for i, n in enumerate(names):
        _img(root / inp / n, base + i)
        _img(root / gt / (gt_names[i] if gt_names else n), base + 100 + i)


def build_reside(r):
    _pairs(r, "OTS/hazy/part1", "OTS/clear", ["0001_0.8_0.2.jpg", "0002_1_0.16.jpg"], ["0001.jpg", "0002.jpg"])
    _pairs(r, "SOTS/outdoor/hazy", "SOTS/outdoor/gt", ["0005_0.9_0.2.jpg"], ["0005.png"])
    return {"train": 2, "test": 1}


def build_snow100k(r):
    _pairs(r, "all/synthetic", "all/gt", ["a.jpg", "b.jpg"])
    _pairs(r, "media/jdway/GameSSD/overlapping/test/Snow100K-L/synthetic",
           "media/jdway/GameSSD/overlapping/test/Snow100K-L/gt", ["c.jpg"])
    _pairs(r, "media/jdway/GameSSD/overlapping/test/Snow100K-S/synthetic",
           "media/jdway/GameSSD/overlapping/test/Snow100K-S/gt", ["s.jpg"])  # not the heavy subset: ignored
    return {"train": 2, "test": 1}


def build_rain13k(r):
    _pairs(r, "train/input", "train/target", ["1.jpg", "2.jpg", "3.jpg"])
    for name in ("Rain100H", "Rain100L", "Test100", "Test1200", "Test2800"):
        _pairs(r, f"test/{name}/input", f"test/{name}/target", ["1.png"])
    return {"train": 3, "test": 5}


def build_lolv1(r):
    _pairs(r, "lol_dataset/our485/low", "lol_dataset/our485/high", ["2.png", "5.png"])
    _pairs(r, "lol_dataset/eval15/low", "lol_dataset/eval15/high", ["1.png"])
    return {"train": 2, "test": 1}


def build_gopro(r):
    for split, seqs in (("train", ["GOPR0372_07_00", "GOPR0374_11_00"]), ("test", ["GOPR0384_11_00"])):
        for s in seqs:
            _pairs(r, f"GOPRO_Large/{split}/{s}/blur", f"GOPRO_Large/{split}/{s}/sharp", ["000047.png", "000048.png"])
            _pairs(r, f"GOPRO_Large/{split}/{s}/blur_gamma", f"GOPRO_Large/{split}/{s}/sharp", ["000047.png"])
    return {"train": 4, "test": 2}


def build_lhp(r):
    _pairs(r, "LHP-Rain/test/input", "LHP-Rain/test/gt", ["x.png", "y.png"])
    return {"test": 2}


def build_revide(r):
    _pairs(r, "REVIDE_indoor/Test/hazy/C005", "REVIDE_indoor/Test/gt/C005", ["00001.JPG", "00002.JPG"])
    _pairs(r, "REVIDE_indoor/Train/hazy/A001", "REVIDE_indoor/Train/gt/A001", ["00001.JPG"])
    return {"test": 2}


def _udc(r, track):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    r.mkdir(parents=True, exist_ok=True)
    savemat(r / f"{track}_test_display.mat", {"test_display": rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)})
    savemat(r / f"{track}_test_gt.mat", {"test_gt": rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)})
    return {"test": 3}


def build_cdd(r):
    _pairs(r, "CDD-11_test/haze_rain", "CDD-11_test/clear", ["000001.png", "000002.png"])
    _pairs(r, "CDD-11_test/low_snow", "CDD-11_test/clear", ["000001.png"])
    return {"test": 2}


def build_lolblur(r):
    _pairs(r, "LOLBlur/test/low_blur_noise/0012", "LOLBlur/test/high_sharp_scaled/0012", ["0000.png", "0001.png"])
    _pairs(r, "LOLBlur/test/low_blur/0012", "LOLBlur/test/high_sharp_scaled/0012", ["0000.png"])
    return {"test": 2}


BUILDERS = {"RESIDE": build_reside, "Snow100K": build_snow100k, "Rain13K": build_rain13k, "LOLv1": build_lolv1,
            "GoPro": build_gopro, "LHP": build_lhp, "REVIDE": build_revide,
            "TOLED": lambda r: _udc(r, "toled"), "POLED": lambda r: _udc(r, "poled"),
            "CDD": build_cdd, "LOLBlur": build_lolblur}


def test_every_registered_dataset_has_a_fake_tree_test():
    assert set(BUILDERS) == set(REGISTRY) and len(REGISTRY) == 11


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_adapter_on_fake_tree(name, tmp_path):
    expected = BUILDERS[name](tmp_path / name)
    res = fetch_dataset(name, tmp_path, allow_download=False, progress=False)
    assert res["status"] == "ready", res
    assert {s: v["pairs"] for s, v in res["splits"].items()} == expected
    assert all(v["unpaired"] == 0 for v in res["splits"].values())
    assert is_complete(tmp_path / name)
    for m in res["manifests"]:
        entries, problems = check_manifest(m)
        assert not problems, [str(p) for p in problems]  # among them: ids unique (Rain13K, GoPro repeat names)
        assert {e.dataset for e in entries} == {name} and all(e.degradation == REGISTRY[name].degradation for e in entries)
    if "train" in res["splits"]:
        _, problems = check_manifest(tmp_path / name / "train.json", other=tmp_path / name / "test.json")
        assert not problems


def test_specific_pairings(tmp_path):
    build_reside(tmp_path / "RESIDE")
    fetch_dataset("RESIDE", tmp_path, allow_download=False, progress=False)
    train = json.loads((tmp_path / "RESIDE" / "train.json").read_text())
    assert {(e["image_path"], e["target_path"]) for e in train} == {
        ("OTS/hazy/part1/0001_0.8_0.2.jpg", "OTS/clear/0001.jpg"), ("OTS/hazy/part1/0002_1_0.16.jpg", "OTS/clear/0002.jpg")}
    build_gopro(tmp_path / "GoPro")
    fetch_dataset("GoPro", tmp_path, allow_download=False, progress=False)
    test = json.loads((tmp_path / "GoPro" / "test.json").read_text())
    assert all("/blur/" in e["image_path"] and "/sharp/" in e["target_path"] for e in test)
    assert [e["id"] for e in test] == ["GOPR0384_11_00-000047", "GOPR0384_11_00-000048"]
    build_rain13k(tmp_path / "Rain13K")
    fetch_dataset("Rain13K", tmp_path, allow_download=False, progress=False)
    test = json.loads((tmp_path / "Rain13K" / "test.json").read_text())
    assert [e["id"] for e in test] == [f"{name}-1" for name in ("Rain100H", "Rain100L", "Test100", "Test1200",
                                                                "Test2800")]
    build_lolblur(tmp_path / "LOLBlur")
    fetch_dataset("LOLBlur", tmp_path, allow_download=False, progress=False)
    assert all("low_blur_noise" in e["image_path"] for e in json.loads((tmp_path / "LOLBlur" / "test.json").read_text()))


def test_missing_dataset_prints_what_to_download_and_where(tmp_path, capsys):
    rc = main(["data", "fetch", "GoPro", "--root", str(tmp_path), "--no-download", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "seungjunnah.github.io" in err and str(tmp_path / "GoPro") in err and "GOPRO_Large/{train, test}" in err
    assert not is_complete(tmp_path / "GoPro")


def test_unknown_dataset_is_a_one_line_error(tmp_path, capsys):
    assert main(["data", "fetch", "ImageNet", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown dataset 'ImageNet'" in err[0] and "RESIDE" in err[0]
