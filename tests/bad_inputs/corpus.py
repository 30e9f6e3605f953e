"""``restorevar data corpus``: reserved evaluation images, malformed sources and output folders that are not
an earlier corpus. Every case is refused before any download (so nothing touches the network) and before
anything is written.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from bad_inputs import Case


def _img(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (160, 200, 3), dtype=np.uint8)).save(path)
    return path


def _corpus(*extra: str, source: str = "folder:photos"):
    """A case with a folder ``photos/`` of one good image; ``extra`` are the further arguments."""
    def setup(tmp: Path) -> list[str]:
        _img(tmp / "photos" / "a.png")
        return ["data", "corpus", "--source", source, "--out", "corpus", "--quiet", *extra]
    return setup


def _reserved_folder(tmp: Path) -> list[str]:
    _img(tmp / "copies" / "mate-backgrounds" / "nature" / "a.png")
    return ["data", "corpus", "--source", "folder:copies/mate-backgrounds", "--out", "corpus", "--quiet"]


def _reserved_file_in_a_folder(tmp: Path) -> list[str]:
    _img(tmp / "photos" / "a.png")
    _img(tmp / "photos" / "from-mate-backgrounds" / "b.png", 1)
    return ["data", "corpus", "--source", "folder:photos", "--out", "corpus", "--quiet"]


def _out_is_a_file(tmp: Path) -> list[str]:
    (tmp / "corpus").write_text("notes")
    return _corpus()(tmp)


def _into_used_folder(tmp: Path) -> list[str]:
    _img(tmp / "corpus" / "mine.png", 3)  # must stay as it is
    return _corpus()(tmp)


def _overwrite_not_a_corpus(tmp: Path) -> list[str]:
    _img(tmp / "corpus" / "holiday.png", 3)
    return _corpus("--overwrite")(tmp)


def _out_inside_source(tmp: Path) -> list[str]:
    _img(tmp / "photos" / "a.png")
    return ["data", "corpus", "--source", "folder:photos", "--out", "photos/corpus", "--quiet"]


def _cache_is_a_file(tmp: Path) -> list[str]:
    (tmp / "cache").write_text("not a folder")
    return ["data", "corpus", "--source", "deb:plasma-workspace-wallpapers", "--out", "corpus", "--cache", "cache",
            "--quiet"]


def _corrupt_earlier_corpus(tmp: Path) -> list[str]:
    """--overwrite of an earlier corpus whose sources are missing: refused, the earlier corpus kept."""
    (tmp / "corpus" / "images").mkdir(parents=True)
    (tmp / "corpus" / "corpus.json").write_text(json.dumps({"corpus_version": 1, "images": []}))
    return ["data", "corpus", "--source", "folder:gone", "--out", "corpus", "--overwrite", "--quiet"]


CASES = [
    Case("corpus-reserved-deb-package", _corpus(source="deb:mate-backgrounds"), "reserved for an independent"),
    Case("corpus-reserved-folder", _reserved_folder, "reserved for an independent"),
    Case("corpus-reserved-system-folder", _corpus(source="folder:/usr/share/backgrounds/mate"), "reserved"),
    Case("corpus-reserved-file-inside-a-folder", _reserved_file_in_a_folder, "reserved for an independent"),
    Case("corpus-unknown-source-scheme", _corpus(source="http://example.org/photos"), "unknown source"),
    Case("corpus-deb-name-like-an-option", _corpus(source="deb:-oDir=/tmp"), "is not a Debian package name"),
    Case("corpus-missing-folder", _corpus(source="folder:nowhere"), "does not exist"),
    Case("corpus-folder-is-a-file", _corpus(source="folder:photos/a.png"), "is a file, not a folder"),
    Case("corpus-source-given-twice", _corpus("--source", "folder:photos"), "given twice"),
    Case("corpus-out-is-a-file", _out_is_a_file, "is a file"),
    Case("corpus-into-non-empty-folder", _into_used_folder, "is not empty"),
    Case("corpus-overwrite-a-folder-that-is-not-a-corpus", _overwrite_not_a_corpus, "no corpus.json"),
    Case("corpus-overwrite-with-a-missing-source", _corrupt_earlier_corpus, "does not exist"),
    Case("corpus-out-inside-the-source-folder", _out_inside_source, "holds --out"),
    Case("corpus-max-side-zero", _corpus("--max-side", "0"), "--max-side must be a positive"),
    Case("corpus-max-side-negative", _corpus("--max-side", "-8"), "--max-side must be a positive"),
    Case("corpus-cache-is-a-file", _cache_is_a_file, "is a file"),
]
