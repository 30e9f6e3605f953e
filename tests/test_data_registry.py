"""Every dataset adapter on a tiny fake tree that mimics the real layout."""
import json

import pytest
from fake_datasets import BUILDERS, build_gopro, build_lolblur, build_rain13k, build_reside

from restorevar.cli import main
from restorevar.data.fetch import is_complete
from restorevar.data.manifest import check_manifest
from restorevar.data.registry import REGISTRY, fetch_dataset


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
