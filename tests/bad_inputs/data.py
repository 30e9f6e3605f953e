"""``restorevar data ...``: synth into a used folder, manifests that `data check` must not pass, and dataset
archives that would replace or delete what is already under the dataset root. All offline: a fetch finds its
archive already in ``_downloads/`` (as after an earlier download), so nothing touches the network.
"""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from bad_inputs import Case

SMALL = ["--size", "16", "--train-per-degradation", "1", "--test-per-degradation", "1", "--quiet"]


def _img(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(path)
    return path


def _row(root: Path, name: str, seed: int, **fields) -> dict:
    _img(root / "in" / f"{name}.png", seed)
    _img(root / "gt" / f"{name}.png", seed + 1000)
    return {"image_path": f"in/{name}.png", "target_path": f"gt/{name}.png", "degradation": 1, "dataset": "toy",
            **fields}


def _check(rows_of):
    """A case that writes ``m.json`` with ``rows_of(tmp)`` and runs `data check` on it."""
    def setup(tmp: Path) -> list[str]:
        (tmp / "m.json").write_text(json.dumps(rows_of(tmp)))
        return ["data", "check", "m.json"]
    return setup


# -- synth -----------------------------------------------------------------------------------------
def _synth_into_used_folder(tmp: Path) -> list[str]:
    (tmp / "bench").mkdir()
    (tmp / "bench" / "train.json").write_text('[{"image_path": "mine.png"}]\n')  # must stay as it is
    return ["data", "synth", "--out", "bench", *SMALL]


def _synth_overwrite_not_a_benchmark(tmp: Path) -> list[str]:
    _img(tmp / "photos" / "train" / "holiday.png", 0)
    return ["data", "synth", "--out", "photos", *SMALL, "--overwrite"]


def _synth_out_is_a_file(tmp: Path) -> list[str]:
    (tmp / "out.txt").write_text("notes")
    return ["data", "synth", "--out", "out.txt", *SMALL]


def _grid_out_is_a_folder(tmp: Path) -> list[str]:
    (tmp / "docs").mkdir()
    (tmp / "docs" / "keep.txt").write_text("mine")
    return ["data", "grid", "--out", "docs"]


# -- check -----------------------------------------------------------------------------------------
def _copied_test_image(tmp: Path) -> list[str]:
    test = _row(tmp / "test", "t", 5)
    (tmp / "test" / "test.json").write_text(json.dumps([test]))
    train = _row(tmp / "train", "a", 1)
    shutil.copyfile(tmp / "test" / "in" / "t.png", tmp / "train" / "in" / "b.png")
    (tmp / "train" / "train.json").write_text(json.dumps([train, train | {"image_path": "in/b.png",
                                                                         "target_path": "gt/a.png"}]))
    return ["data", "check", "train/train.json", "--against", "test/test.json"]


def _dotdot_escape(tmp: Path) -> list[str]:
    _img(tmp / "shared" / "x.png", 3)
    (tmp / "set" / "m.json").parent.mkdir()
    (tmp / "set" / "m.json").write_text(json.dumps([_row(tmp / "set", "a", 1, target_path="../shared/x.png")]))
    return ["data", "check", "set/m.json"]


def _huge_integer_id(tmp: Path) -> list[str]:
    _row(tmp, "a", 1)
    row = json.dumps(_row(tmp, "a", 1))[:-1] + ', "id": ' + "9" * 5000 + "}"
    (tmp / "m.json").write_text(f"[{row}]")
    return ["data", "check", "m.json"]


def _synth_overwrite_keeps_own_files(tmp: Path) -> list[str]:
    """An earlier benchmark, then a file of the user's own inside it: --overwrite must not delete it."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "restorevar.cli", "data", "synth", "--out", "bench", *SMALL], cwd=tmp,
                   check=True, capture_output=True)
    _img(tmp / "bench" / "train" / "my_notes.png", 9)
    return ["data", "synth", "--out", "bench", *SMALL, "--overwrite"]


# -- fetch -----------------------------------------------------------------------------------------
def _tar_gz(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def _snow_archive(members: dict[str, bytes], existing: dict[str, bytes] | None = None):
    """Snow100K has no published checksum, so an archive already in _downloads/ is taken as it is."""
    def setup(tmp: Path) -> list[str]:
        folder = tmp / "raw" / "Snow100K"
        _tar_gz(folder / "_downloads" / "Snow100K-training.tar.gz", members)
        for rel, data in (existing or {}).items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
        return ["data", "fetch", "Snow100K", "--root", "raw", "--quiet"]
    return setup


def _lol_wrong_archive(tmp: Path) -> list[str]:
    dl = tmp / "raw" / "LOLv1" / "_downloads"
    dl.mkdir(parents=True)
    (dl / "lol_dataset.zip").write_bytes(b"some other file")  # LOLv1 publishes a sha256: this one fails it
    return ["data", "fetch", "LOLv1", "--root", "raw", "--quiet"]


def _root_is_a_file(tmp: Path) -> list[str]:
    (tmp / "raw").write_text("not a folder")
    return ["data", "fetch", "Snow100K", "--root", "raw", "--quiet"]


PNG = b"\x89PNG fake"

CASES = [
    Case("data-synth-into-non-empty-folder", _synth_into_used_folder, "is not empty"),
    Case("data-synth-overwrite-a-folder-that-is-not-a-benchmark", _synth_overwrite_not_a_benchmark,
         "no synth_info.json"),
    Case("data-synth-out-is-a-file", _synth_out_is_a_file, "is a file"),
    Case("data-grid-out-is-a-folder", _grid_out_is_a_folder, "is a folder"),
    Case("data-grid-size-zero", lambda tmp: ["data", "grid", "--out", "g.png", "--size", "0"],
         "--size must be between 16 and 1024"),
    Case("data-synth-negative-seed", lambda tmp: ["data", "synth", "--out", "bench", *SMALL, "--seed", "-1"],
         "--seed must be an integer"),
    Case("data-grid-negative-seed", lambda tmp: ["data", "grid", "--out", "g.png", "--seed", "-1"],
         "--seed must be an integer"),
    Case("data-check-wrong-field-type", _check(lambda t: [_row(t, "a", 1, target_path=5)]),
         "target_path must be a string"),
    Case("data-check-entry-not-an-object", _check(lambda t: [_row(t, "a", 1), ["in/a.png", "gt/a.png", 1, "toy"]]),
         "is a list, not an object"),
    Case("data-check-absolute-path",
         _check(lambda t: [_row(t, "a", 1, image_path=str(_img(t / "elsewhere" / "x.png", 3)))]),
         "is an absolute path"),
    Case("data-check-dotdot-escape", _dotdot_escape, "leaves the manifest's folder"),
    Case("data-check-duplicate-ids", _check(lambda t: [_row(t, "a", 1, id="p1"), _row(t, "b", 2, id="p1")]),
         "ids must be unique"),
    Case("data-check-test-image-copied-into-train", _copied_test_image, "same content as"),
    Case("data-check-dataset-null", _check(lambda t: [_row(t, "a", 1, dataset=None)]),
         "dataset must be a non-empty string"),
    Case("data-check-empty-manifest", _check(lambda t: []), "holds no entries"),
    # an id or dataset names a folder that evaluation writes samples into: it must be one plain name
    Case("data-check-id-climbs-out", _check(lambda t: [_row(t, "a", 1, id="../../../../escaped")]),
         "id str \"../../../../escaped\" holds a path separator"),
    Case("data-check-id-absolute", _check(lambda t: [_row(t, "a", 1, id="/tmp/escaped")]),
         "holds a path separator"),
    Case("data-check-id-dotdot", _check(lambda t: [_row(t, "a", 1, id="..")]), "which names no file"),
    Case("data-check-dataset-absolute", _check(lambda t: [_row(t, "a", 1, dataset="/tmp/escaped")]),
         "a dataset is named by one plain folder name"),
    Case("data-check-dataset-dotdot", _check(lambda t: [_row(t, "a", 1, dataset="..")]), "which names no file"),
    Case("data-check-image-path-root", _check(lambda t: [_row(t, "a", 1, image_path="/")]), "names no file"),
    Case("data-check-image-path-dot", _check(lambda t: [_row(t, "a", 1, image_path=".")]), "names no file"),
    Case("data-check-image-path-dotdot", _check(lambda t: [_row(t, "a", 1, image_path="..")]), "names no file"),
    Case("data-check-huge-integer", _huge_integer_id, "holds a value that cannot be read"),
    Case("data-synth-overwrite-keeps-the-users-files", _synth_overwrite_keeps_own_files, "my_notes.png"),
    Case("data-fetch-archive-over-a-folder-placed-by-hand",
         _snow_archive({"all/synthetic/a.jpg": PNG, "all/gt/a.jpg": PNG}, existing={"all/gt/mine.jpg": PNG}),
         "all already exists and did not come from this archive"),
    Case("data-fetch-archive-member-named-like-the-downloads",
         _snow_archive({"_downloads/Snow100K-training.tar.gz": b"x", "all/gt/a.jpg": PNG}),
         "top-level _downloads, a name fetch keeps for itself"),
    Case("data-fetch-archive-member-outside-the-root", _snow_archive({"../escape.jpg": PNG}),
         "would be written outside"),
    Case("data-fetch-archive-with-a-complete-mark", _snow_archive({".complete": b"{}", "all/gt/a.jpg": PNG}),
         "top-level .complete, a name fetch keeps for itself"),
    Case("data-fetch-archive-with-the-wrong-checksum", _lol_wrong_archive, "sha256 does not match"),
    Case("data-fetch-root-is-a-file", _root_is_a_file, "is a file"),
]
