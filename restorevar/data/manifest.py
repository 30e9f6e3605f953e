"""Manifests in the reference code's format, and their validation.

A manifest is a JSON list of ``{"image_path", "target_path", "degradation", "dataset"}`` with integer
degradation classes (Haze=1, Rain=2, Snow=3, Low-light=4, Motion blur=5, Mixed=6, TOLED=7, POLED=8).
We read and write that unchanged; our optional extra keys (``split``, ``params``, ``id``, ...) are
ignored by readers that don't know them. Relative paths resolve against the manifest's folder.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from restorevar.errors import UserError
from restorevar.fileio import atomic_write

DEGRADATION_CLASSES = {"haze": 1, "rain": 2, "snow": 3, "lowlight": 4, "motion_blur": 5, "mixed": 6,
                       "toled": 7, "poled": 8}
CLASS_NAMES = {v: k for k, v in DEGRADATION_CLASSES.items()}
REQUIRED = ("image_path", "target_path", "degradation", "dataset")


@dataclass
class Entry:
    image_path: str  # the degraded image
    target_path: str | None  # the clean image; None for no-reference sets
    degradation: int
    dataset: str
    extra: dict[str, Any] = field(default_factory=dict)  # optional keys, kept verbatim

    def to_json(self) -> dict[str, Any]:
        return {"image_path": self.image_path, "target_path": self.target_path, "degradation": self.degradation,
                "dataset": self.dataset, **self.extra}

    def resolve(self, base: Path) -> tuple[Path, Path | None]:
        img = Path(self.image_path)
        tgt = Path(self.target_path) if self.target_path else None
        return (img if img.is_absolute() else base / img), (tgt if tgt is None or tgt.is_absolute() else base / tgt)


def degradation_class(value: Any) -> int:
    """Accept the integer class or its name ('haze', 'Low-light', 'motion blur', ...)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in CLASS_NAMES:
            raise ValueError(value)
        return value
    if isinstance(value, str):
        key = value.strip().lower().replace("-", "").replace(" ", "_")
        key = {"low_light": "lowlight", "lowlight": "lowlight", "motionblur": "motion_blur"}.get(key, key)
        if key in DEGRADATION_CLASSES:
            return DEGRADATION_CLASSES[key]
        if key.isdigit():
            return degradation_class(int(key))
    raise ValueError(value)


def read_manifest(path: str | Path) -> list[Entry]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"manifest not found: {path}; check the path")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"manifest {path} is not valid JSON: {e}") from None
    if not isinstance(data, list):
        raise UserError(f"manifest {path} must be a JSON list of entries, got {type(data).__name__}")
    entries = []
    for i, d in enumerate(data):
        if not isinstance(d, dict) or any(k not in d for k in ("image_path", "degradation", "dataset")):
            raise UserError(f"manifest {path} entry {i} lacks one of {', '.join(REQUIRED)}")
        extra = {k: v for k, v in d.items() if k not in REQUIRED}
        deg = d["degradation"]
        try:
            deg = degradation_class(deg)
        except ValueError:
            pass  # kept as is; `check` reports it, training refuses it
        entries.append(Entry(str(d["image_path"]), d.get("target_path"), deg, str(d["dataset"]), extra))
    return entries


def write_manifest(path: str | Path, entries: list[Entry]) -> None:
    text = json.dumps([e.to_json() for e in entries], indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


# ------------------------------------------------------------------------------------------------
# check
# ------------------------------------------------------------------------------------------------
@dataclass
class Problem:
    index: int
    path: str
    message: str
    manifest: str = ""

    def __str__(self) -> str:
        where = f"{self.manifest}[{self.index}]" if self.manifest else f"[{self.index}]"
        return f"{where} {self.path}: {self.message}"


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()  # decodes fully: a truncated file fails here, not later in training
        return im.size


def check_manifest(path: str | Path, other: str | Path | None = None) -> tuple[list[Entry], list[Problem]]:
    """Validate a manifest (and its disjointness from ``other``, e.g. the test split)."""
    path = Path(path)
    entries = read_manifest(path)
    base = path.parent
    problems: list[Problem] = []
    seen: dict[tuple[str, str | None], int] = {}
    for i, e in enumerate(entries):
        img, tgt = e.resolve(base)
        if not isinstance(e.degradation, int) or e.degradation not in CLASS_NAMES:
            problems.append(Problem(i, e.image_path, f"unknown degradation label {e.degradation!r} "
                                    f"(known: {', '.join(f'{v}={k}' for k, v in DEGRADATION_CLASSES.items())})"))
        key = (str(img.resolve()), str(tgt.resolve()) if tgt else None)
        if key in seen:
            problems.append(Problem(i, e.image_path, f"duplicate of entry {seen[key]}"))
        else:
            seen[key] = i
        sizes = []
        for p in (img, tgt):
            if p is None:
                continue
            if not p.exists():
                problems.append(Problem(i, str(p), "file not found"))
                continue
            try:
                sizes.append(_image_size(p))
            except Exception as ex:  # noqa: BLE001 - PIL raises several types for bad files
                problems.append(Problem(i, str(p), f"cannot decode image ({type(ex).__name__}: {ex})"))
        if len(sizes) == 2 and sizes[0] != sizes[1]:
            problems.append(Problem(i, e.image_path, f"degraded size {sizes[0]} differs from target size {sizes[1]}"))
    if other is not None:
        other_entries = read_manifest(other)
        other_files = {}
        for j, e in enumerate(other_entries):
            for p in e.resolve(Path(other).parent):
                if p is not None:
                    other_files[str(p.resolve())] = j
        for i, e in enumerate(entries):
            for p in e.resolve(base):
                if p is not None and str(p.resolve()) in other_files:
                    problems.append(Problem(i, str(p), f"also in {other} (entry {other_files[str(p.resolve())]}): "
                                            "train and test overlap"))
    return entries, problems


def count_table(entries: list[Entry]) -> str:
    counts = Counter((e.dataset, CLASS_NAMES.get(e.degradation, str(e.degradation))) for e in entries)
    rows = [("dataset", "degradation", "pairs")] + [(d, g, str(n)) for (d, g), n in sorted(counts.items())]
    rows.append(("total", "", str(len(entries))))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows)
