"""Manifests in the official code's format, and their validation.

A manifest is a JSON list of ``{"image_path", "target_path", "degradation", "dataset"}``. The official loader
knows the degradation by name ("Haze", "Rain", "Snow", "Low-light", "Motion blur", "Mixed", "toled",
"poled"), and that is what we write; we also read the integer classes (Haze=1 ... POLED=8) and looser
spellings. Our optional extra keys (``split``, ``params``, ``id``, ...) are ignored by readers that don't
know them. Relative paths resolve against the manifest's folder. An entry's ``id`` names its image in
paired results; without one it comes from the dataset-relative path, since file names repeat across
GoPro's sequences and Rain13K's test sets.
``check_manifest`` lists every problem: malformed entries, unknown labels, paths outside the manifest's
folder (absolute, or ``..`` out of it; the reference code writes absolute paths, accepted on request),
missing or undecodable files, duplicate pairs and ids, and train/test overlap by path or by file content.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from restorevar.data.fetch import sha256_of
from restorevar.errors import UserError
from restorevar.fileio import atomic_write

DEGRADATION_CLASSES = {"haze": 1, "rain": 2, "snow": 3, "lowlight": 4, "motion_blur": 5, "mixed": 6,
                       "toled": 7, "poled": 8}
CLASS_NAMES = {v: k for k, v in DEGRADATION_CLASSES.items()}
# the labels the official loader accepts, written in every manifest we produce
OFFICIAL_LABELS = {1: "Haze", 2: "Rain", 3: "Snow", 4: "Low-light", 5: "Motion blur", 6: "Mixed", 7: "toled",
                   8: "poled"}
REQUIRED = ("image_path", "target_path", "degradation", "dataset")


@dataclass
class Entry:
    image_path: str  # the degraded image
    target_path: str | None  # the clean image; None for no-reference sets
    degradation: int
    dataset: str
    extra: dict[str, Any] = field(default_factory=dict)  # optional keys, kept verbatim

    def to_json(self) -> dict[str, Any]:
        return {"image_path": self.image_path, "target_path": self.target_path,
                "degradation": OFFICIAL_LABELS.get(self.degradation, self.degradation), "dataset": self.dataset,
                **self.extra}

    @property
    def id(self) -> str:
        """The image's name in paired results: the ``id`` key, else the path below the dataset's folder.

        ``data/Motion_blur/GoPro/Test/GOPR0384_11_00/blur/000001.png`` -> ``Test-GOPR0384_11_00-blur-000001``:
        unique where stems repeat, and without '/', since evaluation names a folder after it.
        """
        if "id" in self.extra:
            return str(self.extra["id"])
        parts = _name_parts(self.image_path)
        lowered = [p.lower() for p in parts]
        below = len(parts) - 1 - lowered[::-1].index(self.dataset.lower()) if self.dataset.lower() in lowered else -1
        return "-".join(parts[below + 1:]) if below + 1 < len(parts) else parts[-1]

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


def _load(path: Path) -> list[Any]:
    if not path.exists():
        raise UserError(f"manifest not found: {path}; check the path")
    if not path.is_file():
        raise UserError(f"manifest {path} is not a file; give the path of a JSON manifest")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"manifest {path} is not valid JSON: {e}") from None
    except ValueError as e:  # an integer of thousands of digits exceeds Python's conversion limit
        raise UserError(f"manifest {path} holds a value that cannot be read ({e}); check the file") from None
    except RecursionError:
        raise UserError(f"manifest {path} nests too deeply to be a list of entries; check the file") from None
    except OSError as e:
        raise UserError(f"cannot read manifest {path} ({e.strerror or e}); check its permissions") from None
    if not isinstance(data, list):
        raise UserError(f"manifest {path} must be a JSON list of entries, got {type(data).__name__}")
    return data


def _show(value: Any) -> str:
    if value is None:
        return "null"
    text = json.dumps(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _is_path(value: Any) -> bool:
    return isinstance(value, str) and value != "" and "\x00" not in value


def _name_parts(image_path: str) -> tuple[str, ...]:
    """The parts of an image path an id is made of: no root, no '.' or '..' (they would name folders)."""
    path = Path(image_path)
    parts = [p for p in path.parts if p not in ("..", ".") and p != path.anchor]
    if parts:
        parts[-1] = os.path.splitext(parts[-1])[0] or parts[-1]  # ".png" alone keeps its name
    return tuple(parts)


def unsafe_component(value: str) -> str | None:
    """Why ``value`` cannot name one file or folder inside an output folder (None if it can).

    Evaluation writes each image's samples under ``<dataset>/<degradation>/<id>``: a separator, '..' or an
    absolute path there would write anywhere on disk."""
    if value.strip() in ("", ".", ".."):
        return f"is {value!r}, which names no file"
    if "/" in value or "\\" in value:
        return "holds a path separator"
    if "\x00" in value or any(ord(c) < 32 for c in value):
        return "holds a control character"
    if len(value.encode("utf-8", "surrogatepass")) > 200:
        return "is longer than 200 bytes"
    return None


def _field_problems(d: Any) -> list[str]:
    """What makes an entry unusable: its kind, missing keys, wrongly typed fields (not unknown labels)."""
    if not isinstance(d, dict):
        kind = "null" if d is None else type(d).__name__
        return [f"is a {kind}, not an object with {', '.join(REQUIRED)}"]
    out = []
    missing = [k for k in ("image_path", "degradation", "dataset") if k not in d]
    if missing:
        out.append(f"lacks {', '.join(missing)} (every entry needs {', '.join(REQUIRED)})")
    if "image_path" in d and not _is_path(d["image_path"]):
        out.append(f"image_path must be a non-empty string, got {_show(d['image_path'])}")
    tgt = d.get("target_path")
    if tgt not in (None, "") and not _is_path(tgt):
        out.append(f"target_path must be a string, or null for no clean image, got {_show(tgt)}")
    deg = d.get("degradation")
    if "degradation" in d and (isinstance(deg, bool) or not isinstance(deg, int | str)):
        out.append(f"degradation must be an integer class or a class name, got {_show(deg)}")
    ds = d.get("dataset")
    if "dataset" in d and not (isinstance(ds, str) and ds.strip()):
        out.append(f"dataset must be a non-empty string naming the entry's dataset, got {_show(ds)}")
    if "dataset" in d and isinstance(ds, str) and ds.strip() and (why := unsafe_component(ds)):
        out.append(f"dataset {_show(ds)} {why}; a dataset is named by one plain folder name")
    if "id" in d and (isinstance(d["id"], bool) or not isinstance(d["id"], int | str)):
        out.append(f"id must be a string or an integer, got {_show(d['id'])}")
    elif "id" in d and (why := unsafe_component(str(d["id"]))):
        out.append(f"id {_show(d['id'])} {why}; an id must be one plain file name (no '/', not '..')")
    elif "id" not in d and _is_path(d.get("image_path")) and not _name_parts(d["image_path"]):
        out.append(f"image_path {_show(d['image_path'])} names no file, so the entry has no id; give the image's "
                   "path")
    return out


def _entry(d: dict[str, Any]) -> Entry:
    deg = d["degradation"]
    try:
        deg = degradation_class(deg)
    except ValueError:
        pass  # kept as is; `check` reports it, training refuses it
    extra = {k: v for k, v in d.items() if k not in REQUIRED}
    return Entry(d["image_path"], d.get("target_path") or None, deg, d["dataset"], extra)


def read_manifest(path: str | Path) -> list[Entry]:
    """The entries of a manifest; the first malformed entry raises a UserError naming it."""
    path = Path(path)
    entries = []
    for i, d in enumerate(_load(path)):
        bad = _field_problems(d)
        if bad:
            raise UserError(f"manifest {path} entry {i}: {bad[0]}; run `restorevar data check {path}` "
                            "to list every problem")
        entries.append(_entry(d))
    return entries


def write_manifest(path: str | Path, entries: list[Entry]) -> None:
    text = json.dumps([e.to_json() for e in entries], indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


# ------------------------------------------------------------------------------------------------
# check
# ------------------------------------------------------------------------------------------------
@dataclass
class Problem:
    index: int | None  # None: the manifest as a whole
    path: str
    message: str
    manifest: str = ""

    def __str__(self) -> str:
        where = self.manifest + (f"[{self.index}]" if self.index is not None else "")
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()  # decodes fully: a truncated file fails here, not later in training
        return im.size


def _outside(rel: str) -> str | None:
    """Why a path written in a manifest may point outside the manifest's folder (None if it cannot)."""
    if Path(rel).is_absolute():
        return "is an absolute path"
    norm = os.path.normpath(rel)
    if norm == os.pardir or norm.startswith(os.pardir + os.sep):
        return "leaves the manifest's folder through '..'"
    return None


def _usable(path: Path) -> list[tuple[int, Entry]]:
    """The well-formed entries of ``path`` with their indices; malformed ones are skipped."""
    return [(i, _entry(d)) for i, d in enumerate(_load(path)) if not _field_problems(d)]


def check_manifest(path: str | Path, other: str | Path | None = None, *,
                   allow_outside_root: bool = False) -> tuple[list[Entry], list[Problem]]:
    """Validate a manifest (and its disjointness from ``other``, e.g. the test split).

    Returns the well-formed entries and every problem found. Paths must stay inside the manifest's folder
    (relative, no ``..`` out of it) unless ``allow_outside_root``; train/test overlap is checked by path and
    by the content of the files, so a test image copied into the training folder is found too.
    """
    path = Path(path)
    base = path.parent
    name = str(path)
    data = _load(path)
    problems: list[Problem] = []
    if not data:
        problems.append(Problem(None, "", "holds no entries; a manifest lists at least one image", name))
    entries: list[Entry] = []
    files: list[tuple[int, Path]] = []  # every (entry, file) that exists, for the overlap checks
    seen: dict[tuple[str, str | None], int] = {}
    seen_ids: dict[tuple[str, str], int] = {}
    for i, d in enumerate(data):
        bad = _field_problems(d)
        label = d.get("image_path") if isinstance(d, dict) and _is_path(d.get("image_path")) else ""
        problems += [Problem(i, label, m, name) for m in bad]
        if bad:
            continue
        e = _entry(d)
        entries.append(e)
        if not isinstance(e.degradation, int) or e.degradation not in CLASS_NAMES:
            problems.append(Problem(i, e.image_path, f"unknown degradation label {e.degradation!r} "
                                    f"(known: {', '.join(f'{v}={k}' for k, v in DEGRADATION_CLASSES.items())})",
                                    name))
        if not allow_outside_root:
            for rel in (e.image_path, e.target_path):
                why = _outside(rel) if rel else None
                if why:
                    problems.append(Problem(i, rel, f"{why}; write paths relative to the manifest's folder "
                                            "(or check with --allow-outside-root)", name))
        img, tgt = e.resolve(base)
        key = (str(img.resolve()), str(tgt.resolve()) if tgt else None)
        if key in seen:
            problems.append(Problem(i, e.image_path, f"duplicate of entry {seen[key]}", name))
        else:
            seen[key] = i
            # results are paired across methods by (dataset, degradation, id), so an id names one image
            given = "id" in e.extra
            key_id = (e.dataset, e.id)
            if key_id not in seen_ids:
                seen_ids[key_id] = i
            elif given:
                problems.append(Problem(i, e.image_path, f"id {key_id[1]!r} is also the id of entry "
                                        f"{seen_ids[key_id]} of dataset {e.dataset}; ids must be unique", name))
            else:
                problems.append(Problem(i, e.image_path, f"its id is its path {key_id[1]!r}, as is entry "
                                        f"{seen_ids[key_id]}'s of dataset {e.dataset}; ids must be unique: give "
                                        "the entries an \"id\" each", name))
        sizes = []
        for p in (img, tgt):
            if p is None:
                continue
            try:
                if not p.is_file():
                    problems.append(Problem(i, str(p), "file not found" if not p.exists() else "is not a file",
                                            name))
                    continue
                files.append((i, p))
                sizes.append(_image_size(p))
            except Exception as ex:  # noqa: BLE001 - PIL raises several types for bad files
                problems.append(Problem(i, str(p), f"cannot decode image ({type(ex).__name__}: {ex})", name))
        if len(sizes) == 2 and sizes[0] != sizes[1]:
            problems.append(Problem(i, e.image_path, f"degraded size {sizes[0]} differs from target size {sizes[1]}",
                                    name))
    if other is not None:
        problems += _overlap(files, Path(other), name)
    return entries, problems


def _overlap(files: list[tuple[int, Path]], other: Path, name: str) -> list[Problem]:
    """Files of this manifest that are files of ``other`` too, by path or by content."""
    by_path: dict[str, int] = {}
    by_content: dict[str, tuple[int, Path]] = {}
    for j, e in _usable(other):
        for p in e.resolve(other.parent):
            if p is None:
                continue
            by_path.setdefault(str(p.resolve()), j)
            try:
                if p.is_file():
                    by_content.setdefault(sha256_of(p), (j, p))
            except OSError:
                pass  # unreadable there: `data check` of that manifest reports it
    problems = []
    for i, p in files:
        j = by_path.get(str(p.resolve()))
        if j is not None:
            problems.append(Problem(i, str(p), f"also in {other} (entry {j}): train and test overlap", name))
            continue
        try:
            hit = by_content.get(sha256_of(p))
        except OSError:
            continue  # already reported as undecodable above
        if hit is not None:
            problems.append(Problem(i, str(p), f"same content as {hit[1]} in {other} (entry {hit[0]}): "
                                    "train and test overlap (a copied image)", name))
    return problems


def count_table(entries: list[Entry]) -> str:
    counts = Counter((e.dataset, CLASS_NAMES.get(e.degradation, str(e.degradation))) for e in entries)
    rows = [("dataset", "degradation", "pairs")] + [(d, g, str(n)) for (d, g), n in sorted(counts.items())]
    rows.append(("total", "", str(len(entries))))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows)
