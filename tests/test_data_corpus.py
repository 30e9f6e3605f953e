"""The pre-training photo corpus: verified files, reserved and test scenes kept out, one file per picture."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restorevar.cli import main
from restorevar.data import corpus
from restorevar.data.corpus import build_corpus, corpus_arrays, load_corpus
from restorevar.data.fetch import sha256_of
from restorevar.data.photos import photo_path, photos_for
from restorevar.errors import UserError
from restorevar.fileio import read_image


def _img(path: Path, w: int, h: int, seed: int = 0) -> Path:
    """Seeded noise, so no two test images share pixels by accident."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _build(sources, out, **kw):
    return build_corpus(sources, out, progress=False, **kw)


def _excluded(info) -> dict[str, str]:
    return {e["origin"]: e["reason"] for e in info["excluded"]}


def test_folder_source_builds_a_verified_corpus(tmp_path):
    src = tmp_path / "photos"
    _img(src / "a.png", 300, 200, 1)
    _img(src / "sub" / "b.jpg", 256, 256, 2)
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "corpus"
    info = _build([f"folder:{src}"], out)
    data = json.loads((out / "corpus.json").read_text())
    assert (out / "corpus.json").read_text() == json.dumps(data, indent=1, sort_keys=True) + "\n"
    assert data["corpus_version"] == 1 and data["max_side"] == 768 and data["sources"] == [f"folder:{src.resolve()}"]
    assert data["deb_packages"] == {} and data["excluded"] == []
    assert [(e["origin"], e["scene"], e["width"], e["height"]) for e in data["images"]] == [
        ("a.png", "a", 300, 200), ("sub/b.jpg", "sub/b", 256, 256)]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000_a.png", "001_sub_b.png"]
    for e in data["images"]:
        assert e["sha256"] == sha256_of(out / e["file"]) and e["source"] == f"folder:{src.resolve()}"
        assert e["source_sha256"] == sha256_of(src / e["origin"])
    assert info["kept"] == {f"folder:{src.resolve()}": 2} and info["images"] == data["images"]
    assert [e["file"] for e in load_corpus(out / "corpus.json")] == [e["file"] for e in data["images"]]
    arrays = corpus_arrays(out)
    assert [a.shape for a in arrays] == [(200, 300, 3), (256, 256, 3)] and arrays[0].dtype == np.uint8
    assert np.array_equal(arrays[0], np.asarray(read_image(src / "a.png")))  # PNG in, lossless out

    stored = out / data["images"][1]["file"]
    stored.write_bytes(stored.read_bytes()[:-8])
    with pytest.raises(UserError, match="does not match its sha256") as e:
        load_corpus(out)
    assert str(stored.resolve()) in str(e.value) and "restorevar data corpus" in str(e.value)
    assert "\n" not in str(e.value)
    stored.unlink()
    with pytest.raises(UserError, match="is missing"):
        corpus_arrays(out / "corpus.json")


def test_same_inputs_give_byte_identical_corpora(tmp_path):
    src = tmp_path / "photos"
    _img(src / "a.png", 300, 200, 1)
    _build([f"folder:{src}"], tmp_path / "c1")
    _build([f"folder:{src}"], tmp_path / "c2")
    for name in ("corpus.json", "images/000_a.png"):
        assert (tmp_path / "c1" / name).read_bytes() == (tmp_path / "c2" / name).read_bytes()


@pytest.mark.parametrize("where", ["mate-backgrounds/photos", "x/Mate-Backgrounds-copy", "ok/sub"])
def test_reserved_sources_are_refused_before_any_work(tmp_path, where, capsys):
    folder = tmp_path / where
    _img(folder / "a.png", 200, 200)
    if where == "ok/sub":  # the folder itself is fine, a file inside it is not
        _img(folder / "mate-backgrounds" / "b.png", 200, 200, 1)
    out = tmp_path / "corpus"
    with pytest.raises(UserError, match="reserved for an independent evaluation"):
        _build([f"folder:{folder}"], out)
    with pytest.raises(UserError, match="reserved"):
        _build(["shipped", "deb:mate-backgrounds"], out)
    assert main(["data", "corpus", "--source", "deb:mate-backgrounds", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and len(err.strip().splitlines()) == 1 and "mate-backgrounds" in err
    assert not out.exists() and not list(tmp_path.glob(".corpus*"))


def test_reserved_path_rule():
    assert corpus._reserved_reason("/usr/share/backgrounds/mate/nature/x.jpg")
    assert corpus._reserved_reason("usr/share/backgrounds/mate")
    assert corpus._reserved_reason("/data/MATE-BACKGROUNDS/x.jpg")
    assert corpus._reserved_reason("/usr/share/backgrounds/mate-ish/x.jpg") is None  # a sibling, not under it
    assert corpus._reserved_reason("/usr/share/backgrounds/gnome/x.jpg") is None


def test_a_copy_of_a_test_photo_is_excluded_as_a_test_scene(tmp_path):
    test = photo_path(photos_for("test")[0])
    src = tmp_path / "photos"
    src.mkdir()
    shutil.copyfile(test, src / f"copy{test.suffix}")
    pixels = np.asarray(read_image(test))
    Image.fromarray(pixels).save(src / "reencoded.png", compress_level=1)  # other bytes, the same pixels
    assert sha256_of(src / "reencoded.png") != sha256_of(test)
    _img(src / "z_ok.png", 200, 200)
    info = _build([f"folder:{src}"], tmp_path / "corpus")
    assert [e["origin"] for e in info["images"]] == ["z_ok.png"]
    assert _excluded(info) == {f"copy{test.suffix}": "test scene", "reencoded.png": "test scene"}


def test_shipped_takes_train_photos_only(tmp_path):
    info = _build(["shipped"], tmp_path / "corpus", max_side=128)
    names = [e["origin"] for e in info["images"]]
    assert names == [p.name for p in photos_for("train")]
    assert not set(names) & {p.name for p in photos_for("test")}
    scenes = {e["origin"]: e["scene"] for e in info["images"]}
    assert scenes["motorcycle_left"] == scenes["motorcycle_right"] == "motorcycle"
    assert all(min(e["width"], e["height"]) == 128 for e in info["images"])


def test_duplicates_small_images_and_downscaling(tmp_path):
    src = tmp_path / "photos"
    _img(src / "big.png", 1000, 600, 1)
    shutil.copyfile(src / "big.png", src / "big_copy.png")
    _img(src / "mid.png", 200, 150, 2)  # under max_side: stored as it is
    _img(src / "tall.png", 600, 1000, 3)
    _img(src / "tiny.png", 100, 300, 4)  # shorter side under min_side
    info = _build([f"folder:{src}"], tmp_path / "corpus", max_side=256)
    sizes = {e["origin"]: (e["width"], e["height"]) for e in info["images"]}
    assert sizes == {"big.png": (427, 256), "mid.png": (200, 150), "tall.png": (256, 427)}
    assert _excluded(info) == {"big_copy.png": "duplicate", "tiny.png": "too small"}
    mid = next(e for e in info["images"] if e["origin"] == "mid.png")
    assert np.array_equal(np.asarray(read_image(tmp_path / "corpus" / mid["file"])),
                          np.asarray(read_image(src / "mid.png")))
    for e in info["images"]:
        assert Image.open(tmp_path / "corpus" / e["file"]).size == (e["width"], e["height"])


def test_links_special_and_unreadable_files_are_skipped_with_a_reason(tmp_path):
    src = tmp_path / "photos"
    _img(src / "a.png", 200, 200)
    (src / "link.png").symlink_to(src / "a.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    outside = _img(tmp_path / "elsewhere" / "b.png", 200, 200, 1)
    (src / "linked_dir").symlink_to(outside.parent)
    info = _build([f"folder:{src}"], tmp_path / "corpus")
    assert [e["origin"] for e in info["images"]] == ["a.png"]
    assert _excluded(info) == {"link.png": "symbolic link", "linked_dir": "symbolic link", "broken.jpg": "unreadable"}
    assert all("\n" not in e["detail"] for e in info["excluded"])


# -- deb: ------------------------------------------------------------------------------------------------------
def _deb(tmp_path: Path, package: str, files: dict[str, tuple[int, int]], version: str = "2:1.0-1") -> Path:
    """A real .deb built with dpkg-deb, holding seeded JPEGs of the given sizes."""
    root = tmp_path / f"{package}-tree"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\nMaintainer: Test <t@example.org>\n"
        "Description: test wallpapers\n")
    for i, (rel, (w, h)) in enumerate(files.items()):
        _img(root / rel, w, h, 10 + i)
    deb = tmp_path / f"{package}_{version.replace(':', '%3a')}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True,
                   capture_output=True)
    return deb


needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
WALL = "usr/share/wallpapers/Foo/contents"


@needs_dpkg
def test_deb_keeps_the_largest_file_of_each_picture_folder(tmp_path, monkeypatch):
    deb = _deb(tmp_path, "foo-wallpapers", {
        f"{WALL}/images/640x400.jpg": (640, 400), f"{WALL}/images/1280x800.jpg": (1280, 800),
        f"{WALL}/images_dark/800x500.jpg": (800, 500), f"{WALL}/screenshot.jpg": (400, 250),
        "usr/share/backgrounds/bar/sky.png": (300, 200)})
    asked = []
    monkeypatch.setattr(corpus, "_download_deb", lambda package, cache: asked.append((package, cache)) or deb)
    out = tmp_path / "corpus"
    info = _build(["deb:foo-wallpapers"], out, cache=tmp_path / "cache")
    assert asked == [("foo-wallpapers", tmp_path / "cache")]
    got = {e["origin"]: (e["scene"], e["width"], e["height"]) for e in info["images"]}
    assert got == {f"{WALL}/images/1280x800.jpg": ("Foo", 1229, 768),
                   f"{WALL}/images_dark/800x500.jpg": ("Foo", 800, 500),
                   "usr/share/backgrounds/bar/sky.png": ("bar/sky", 300, 200)}
    assert _excluded(info) == {f"{WALL}/images/640x400.jpg": "smaller resolution",
                               f"{WALL}/screenshot.jpg": "preview thumbnail"}
    assert info["deb_packages"] == {"foo-wallpapers": {"deb_sha256": sha256_of(deb), "version": "2:1.0-1"}}
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000_bar_sky.png", "001_Foo.png", "002_Foo_dark.png"]
    assert all(e["source"] == "deb:foo-wallpapers" for e in info["images"])
    assert not list(tmp_path.glob(".corpus.*"))  # the unpacked package is gone


@needs_dpkg
def test_deb_in_the_cache_is_reused_without_apt(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    deb = _deb(cache, "foo-wallpapers", {f"{WALL}/images/1280x800.jpg": (1280, 800)})
    real_which = shutil.which
    monkeypatch.setattr(corpus.shutil, "which", lambda cmd: None if cmd == "apt-get" else real_which(cmd))
    info = _build(["deb:foo-wallpapers"], tmp_path / "corpus", cache=cache)
    assert len(info["images"]) == 1 and info["deb_packages"]["foo-wallpapers"]["deb_sha256"] == sha256_of(deb)


@needs_dpkg
def test_deb_holding_reserved_images_or_another_package_is_refused(tmp_path, monkeypatch):
    bad = _deb(tmp_path, "foo-wallpapers", {"usr/share/backgrounds/mate/nature/a.jpg": (300, 200)})
    monkeypatch.setattr(corpus, "_download_deb", lambda package, cache: bad)
    with pytest.raises(UserError, match="reserved"):
        _build(["deb:foo-wallpapers"], tmp_path / "c")
    mate = _deb(tmp_path / "m", "mate-backgrounds", {"usr/share/backgrounds/x.jpg": (300, 200)})
    monkeypatch.setattr(corpus, "_download_deb", lambda package, cache: mate)  # a renamed reserved .deb
    with pytest.raises(UserError, match="reserved"):
        _build(["deb:foo-wallpapers"], tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_deb_without_apt_names_the_package_and_the_folder_way(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus.shutil, "which", lambda cmd: None)
    with pytest.raises(UserError) as e:
        _build(["deb:foo-wallpapers"], tmp_path / "c", cache=tmp_path / "cache")
    msg = str(e.value)
    assert "deb:foo-wallpapers" in msg and "apt-get" in msg and "folder:<path>" in msg and "\n" not in msg


# -- the output folder -----------------------------------------------------------------------------------------
def test_overwrite_replaces_only_an_earlier_corpus(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _img(a / "one.png", 200, 200, 1)
    _img(b / "two.png", 200, 200, 2)
    out = tmp_path / "corpus"
    _build([f"folder:{a}"], out)
    (out / "notes.txt").write_text("mine")
    before = (out / "corpus.json").read_text()
    with pytest.raises(UserError, match="is not empty"):
        _build([f"folder:{b}"], out)
    assert (out / "corpus.json").read_text() == before
    _build([f"folder:{b}"], out, overwrite=True)
    assert [e["origin"] for e in load_corpus(out)] == ["two.png"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000_two.png"]
    assert (out / "notes.txt").read_text() == "mine"
    other = tmp_path / "other"
    _img(other / "holiday.png", 200, 200)
    with pytest.raises(UserError, match="no corpus.json"):
        _build([f"folder:{a}"], other, overwrite=True)
    assert [p.name for p in other.iterdir()] == ["holiday.png"]


def test_an_interrupted_run_leaves_out_as_it_was(tmp_path, monkeypatch):
    src = tmp_path / "photos"
    _img(src / "a.png", 200, 200, 1)
    _img(src / "b.png", 200, 200, 2)
    out = tmp_path / "corpus"
    _build([f"folder:{src}"], out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    calls, real = [], corpus.write_png

    def flaky(path, array):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(path, array)

    monkeypatch.setattr(corpus, "write_png", flaky)
    with pytest.raises(KeyboardInterrupt):
        _build([f"folder:{src}"], out, overwrite=True, max_side=150)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "photos"]  # no staging folder left


def test_cli_prints_a_one_line_summary(tmp_path, capsys):
    src = tmp_path / "photos"
    _img(src / "a.png", 300, 200, 1)
    _img(src / "tiny.png", 50, 50, 2)
    out = tmp_path / "corpus"
    assert main(["data", "corpus", "--source", f"folder:{src}", "--out", str(out), "--quiet", "--max-side", "100"]) == 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("corpus: kept 1 images of 1 scenes")
    assert "excluded 1 (1 too small)" in err
    assert [(e["width"], e["height"]) for e in load_corpus(out)] == [(150, 100)]
