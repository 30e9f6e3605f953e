"""The real datasets of the paper: where each comes from, how it is laid out, and its adapter.

Sources were checked against the datasets' pages and the public code that reads them. Checksums are
given only where one is published (the Hugging Face copies of LOL and CDD-11); elsewhere ``sha256`` is
None and the archive is taken as is. Most sets sit behind Google Drive or Baidu: for those ``fetch``
prints what to download and where to put it, then adapts the folder once it is there.

Every adapter turns ``ROOT/NAME/`` into ``{split: [Entry]}`` with paths relative to that folder, using the
splits the paper uses (SOTS-outdoor for RESIDE, Snow100K-L, the five Rain13K test sets, LOL eval15, ...).
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restorevar.data.fetch import DOWNLOADS, DownloadError, download, extract, is_complete, mark_complete
from restorevar.data.manifest import DEGRADATION_CLASSES as CLS
from restorevar.data.manifest import Entry, write_manifest
from restorevar.errors import UserError

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class LayoutMissing(UserError):
    """The expected folders are not (yet) under the dataset root."""


@dataclass(frozen=True)
class Source:
    filename: str
    url: str | None = None  # a direct archive URL; None where only a web page offers it
    sha256: str | None = None
    size: int | None = None
    manual: str = ""  # how to get it by hand (Drive/Baidu/sign-up), when no direct URL works


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    degradation: int
    role: str  # "aior" (train + test) or "generalization" (test only)
    homepage: str
    sources: tuple[Source, ...]
    layout: str
    adapter: Callable[[Path], dict[str, list[Entry]]]


# ------------------------------------------------------------------------------------------------
# Adapter helpers
# ------------------------------------------------------------------------------------------------
def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXT and p.is_file())


def _find_dirs(root: Path, name: str) -> list[Path]:
    return sorted(p for p in root.rglob(name) if p.is_dir())


def _one_dir(root: Path, *parts: str, what: str) -> Path:
    """The unique folder ending in ``parts`` anywhere under root (archives nest them differently)."""
    hits = [p for p in _find_dirs(root, parts[-1]) if p.parts[-len(parts):] == parts]
    if not hits:
        raise LayoutMissing(f"no {'/'.join(parts)} folder under {root} ({what})")
    return hits[0]


def _pair(root: Path, inputs: Path, targets: Path, dataset: str, deg: int, split: str,
          target_stem: Callable[[str], str] = lambda s: s, same_subdir: bool = True, **extra: Any) -> list[Entry]:
    """Pair every image under ``inputs`` with the target of the mapped stem (in the same relative subfolder
    unless ``same_subdir`` is False, for sets whose inputs are split into parts but targets are not)."""
    def key_of(p: Path, base: Path, stem: str) -> tuple[str, str]:
        return (p.parent.relative_to(base).as_posix() if same_subdir else "", stem)

    def id_of(p: Path) -> str:
        # unique within a split: file names repeat across Rain13K's test sets and GoPro's sequences, and
        # results are paired by id; no '/', since evaluation saves samples in a folder named by the id
        prefix = [str(extra[k]) for k in ("subset", "sequence") if k in extra]
        return "-".join(prefix + list(p.relative_to(inputs).with_suffix("").parts))

    by_key = {key_of(t, targets, t.stem): t for t in _images(targets)}
    out = []
    for p in _images(inputs):
        key = key_of(p, inputs, target_stem(p.stem))
        tgt = by_key.get(key)
        meta = {"id": id_of(p), "split": split, **extra} | ({} if tgt else {"unpaired": True})
        out.append(Entry(p.relative_to(root).as_posix(), tgt.relative_to(root).as_posix() if tgt else None, deg,
                         dataset, meta))
    if not out:
        raise LayoutMissing(f"no images in {inputs}")
    return out


def _strip_haze_params(stem: str) -> str:
    return stem.split("_")[0]  # RESIDE: <id>_<A>_<beta> -> <id>


# ------------------------------------------------------------------------------------------------
# Adapters, one per dataset
# ------------------------------------------------------------------------------------------------
def adapt_reside(root: Path) -> dict[str, list[Entry]]:
    out = {"train": _pair(root, _one_dir(root, "OTS", "hazy", what="OTS training hazy images"),
                          _one_dir(root, "OTS", "clear", what="OTS clear images"), "RESIDE", CLS["haze"], "train",
                          _strip_haze_params, same_subdir=False)}
    out["test"] = _pair(root, _one_dir(root, "outdoor", "hazy", what="SOTS outdoor hazy"),
                        _one_dir(root, "outdoor", "gt", what="SOTS outdoor ground truth"), "RESIDE", CLS["haze"],
                        "test", _strip_haze_params, subset="SOTS-outdoor")
    return out


def adapt_snow100k(root: Path) -> dict[str, list[Entry]]:
    train_root = _one_dir(root, "all", "synthetic", what="Snow100K-training/all/synthetic").parent
    test_root = _one_dir(root, "Snow100K-L", "synthetic", what="Snow100K-testset .../Snow100K-L/synthetic").parent
    return {"train": _pair(root, train_root / "synthetic", train_root / "gt", "Snow100K", CLS["snow"], "train"),
            "test": _pair(root, test_root / "synthetic", test_root / "gt", "Snow100K", CLS["snow"], "test",
                          subset="Snow100K-L")}


RAIN13K_TESTS = ("Rain100H", "Rain100L", "Test100", "Test1200", "Test2800")


def adapt_rain13k(root: Path) -> dict[str, list[Entry]]:
    tr = _one_dir(root, "train", "input", what="Rain13K train/input").parent
    test: list[Entry] = []
    for name in RAIN13K_TESTS:
        d = _one_dir(root, "test", name, "input", what=f"test set {name}").parent
        test += _pair(root, d / "input", d / "target", "Rain13K", CLS["rain"], "test", subset=name)
    return {"train": _pair(root, tr / "input", tr / "target", "Rain13K", CLS["rain"], "train"), "test": test}


def adapt_lolv1(root: Path) -> dict[str, list[Entry]]:
    tr, te = _one_dir(root, "our485", "low", what="our485/low").parent, _one_dir(root, "eval15", "low", what="eval15/low").parent
    return {"train": _pair(root, tr / "low", tr / "high", "LOLv1", CLS["lowlight"], "train"),
            "test": _pair(root, te / "low", te / "high", "LOLv1", CLS["lowlight"], "test")}


def adapt_gopro(root: Path, blur: str = "blur") -> dict[str, list[Entry]]:
    base = _one_dir(root, "GOPRO_Large", "train", what="GOPRO_Large/train").parent
    out = {}
    for split in ("train", "test"):
        entries: list[Entry] = []
        for seq in sorted(p for p in (base / split).iterdir() if p.is_dir()):
            entries += _pair(root, seq / blur, seq / "sharp", "GoPro", CLS["motion_blur"], split, sequence=seq.name)
        out[split] = entries
    return out


def adapt_lhp(root: Path) -> dict[str, list[Entry]]:
    d = _one_dir(root, "input", what="LHP-Rain input folder").parent
    return {"test": _pair(root, d / "input", d / "gt", "LHP", CLS["rain"], "test")}


def adapt_revide(root: Path) -> dict[str, list[Entry]]:
    d = _one_dir(root, "Test", "hazy", what="REVIDE_indoor/Test/hazy").parent
    return {"test": _pair(root, d / "hazy", d / "gt", "REVIDE", CLS["haze"], "test")}


def _adapt_udc(root: Path, track: str) -> dict[str, list[Entry]]:
    """UDC test data ships as ``{track}_test_{display,gt}.mat``; we write them out as PNGs once."""
    import numpy as np
    from scipy.io import loadmat

    from restorevar.fileio import write_png

    mats = {k: next(iter(sorted(root.rglob(f"{track.lower()}_test_{k}.mat"))), None) for k in ("display", "gt")}
    if mats["display"] is None:
        raise LayoutMissing(f"no {track.lower()}_test_display.mat under {root}")
    entries = []
    arrays = {}
    for k, path in mats.items():
        if path is None:
            continue
        try:
            arrays[k] = np.asarray(loadmat(path)[f"test_{k}"])
        except (KeyError, ValueError, NotImplementedError) as e:
            raise UserError(f"cannot read {path} (expected a MATLAB v5 file with key test_{k}): {e}") from None
    for i in range(arrays["display"].shape[0]):
        rel_in = f"png/{track}/input/{i:03d}.png"
        write_png(root / rel_in, arrays["display"][i].astype(np.uint8))
        rel_gt = None
        if "gt" in arrays:
            rel_gt = f"png/{track}/gt/{i:03d}.png"
            write_png(root / rel_gt, arrays["gt"][i].astype(np.uint8))
        entries.append(Entry(rel_in, rel_gt, CLS[track.lower()], track, {"split": "test"}))
    return {"test": entries}


def adapt_cdd(root: Path) -> dict[str, list[Entry]]:
    d = _one_dir(root, "CDD-11_test", "haze_rain", what="CDD-11_test/haze_rain").parent
    return {"test": _pair(root, d / "haze_rain", d / "clear", "CDD", CLS["mixed"], "test", subset="haze_rain")}


def adapt_lolblur(root: Path) -> dict[str, list[Entry]]:
    d = _one_dir(root, "test", "high_sharp_scaled", what="LOLBlur/test/high_sharp_scaled").parent
    inp = d / "low_blur_noise" if (d / "low_blur_noise").is_dir() else d / "low_blur"
    return {"test": _pair(root, inp, d / "high_sharp_scaled", "LOLBlur", CLS["mixed"], "test", input=inp.name)}


DRIVE = "Google Drive folder linked from the homepage"
REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("RESIDE", CLS["haze"], "aior", "https://sites.google.com/view/reside-dehaze-datasets",
                (Source("RESIDE", manual="OTS (train) and SOTS (test) from the RESIDE page"),),
                "RESIDE/OTS/{hazy/<id>_<A>_<beta>.jpg, clear/<id>.jpg}; RESIDE/SOTS/outdoor/{hazy, gt}", adapt_reside),
    DatasetSpec("Snow100K", CLS["snow"], "aior", "https://sites.google.com/view/yunfuliu/desnownet", (
        Source("Snow100K-training.tar.gz",
               "https://desnownet.s3.amazonaws.com/dataset_synthetic/train/Snow100K-training.tar.gz"),
        Source("Snow100K-testset.tar.gz",
               "https://desnownet.s3.amazonaws.com/dataset_synthetic/test/Snow100K-testset.tar.gz")),
        "all/{synthetic, gt} (train); .../Snow100K-L/{synthetic, gt} (test: the heavy subset)", adapt_snow100k),
    DatasetSpec("Rain13K", CLS["rain"], "aior", "https://github.com/swz30/MPRNet",
                (Source("Rain13K", manual=f"train and test folders from the MPRNet deraining README ({DRIVE})"),),
                "train/{input, target}; test/{Rain100H, Rain100L, Test100, Test1200, Test2800}/{input, target}",
                adapt_rain13k),
    DatasetSpec("LOLv1", CLS["lowlight"], "aior", "https://daooshee.github.io/BMVC2018website/", (
        Source("lol_dataset.zip", "https://huggingface.co/datasets/geekyrakshit/LoL-Dataset/resolve/main/lol_dataset.zip",
               "419fddc48958cd0f5599939ee0248852a37ceb8bb738c9b9525e95b25a89de9a", 347171015),),
        "lol_dataset/our485/{low, high} (train); lol_dataset/eval15/{low, high} (test)", adapt_lolv1),
    DatasetSpec("GoPro", CLS["motion_blur"], "aior", "https://seungjunnah.github.io/Datasets/gopro",
                (Source("GOPRO_Large.zip", manual=f"GOPRO_Large.zip from the DeepDeblur_release README ({DRIVE})"),),
                "GOPRO_Large/{train, test}/<sequence>/{blur, sharp}/*.png", adapt_gopro),
    DatasetSpec("LHP", CLS["rain"], "generalization", "https://github.com/yunguo224/LHP-Rain",
                (Source("LHP-Rain", manual="the test set from the LHP-Rain project page (Baidu/Drive)"),),
                "<any>/{input, gt}/*.png", adapt_lhp),
    DatasetSpec("REVIDE", CLS["haze"], "generalization", "https://github.com/BookerDeWitt/REVIDE_Dataset",
                (Source("REVIDE_indoor", manual=f"REVIDE_indoor from the README ({DRIVE} or Baidu, code n6r8)"),),
                "REVIDE_indoor/Test/{hazy, gt}/<sequence>/*.JPG", adapt_revide),
    DatasetSpec("TOLED", CLS["toled"], "generalization", "https://yzhouas.github.io/projects/UDC/udc.html",
                (Source("toled_test_display.mat", manual="toled_test_display.mat and toled_test_gt.mat from the UDC page"),),
                "toled_test_display.mat (+ toled_test_gt.mat), keys test_display / test_gt",
                lambda r: _adapt_udc(r, "TOLED")),
    DatasetSpec("POLED", CLS["poled"], "generalization", "https://yzhouas.github.io/projects/UDC/udc.html",
                (Source("poled_test_display.mat", manual="poled_test_display.mat and poled_test_gt.mat from the UDC page"),),
                "poled_test_display.mat (+ poled_test_gt.mat), keys test_display / test_gt",
                lambda r: _adapt_udc(r, "POLED")),
    DatasetSpec("CDD", CLS["mixed"], "generalization", "https://github.com/gy65896/OneRestore", (
        Source("CDD-11_test.zip", "https://huggingface.co/datasets/gy65896/CDD-11/resolve/main/CDD-11_test.zip",
               "56239942d76d0b6d4cbe82f4ea4ba1a47a12673a969790e471a0504a16c10e5f", 3770949296),),
        "CDD-11_test/{haze_rain, clear}/*.png (the haze + rain subset)", adapt_cdd),
    DatasetSpec("LOLBlur", CLS["mixed"], "generalization", "https://github.com/sczhou/LEDNet",
                (Source("LOLBlur", manual=f"LOL-Blur from the LEDNet README ({DRIVE} or Baidu, key dz6u)"),),
                "LOLBlur/test/{low_blur_noise, high_sharp_scaled}/<video>/*.png", adapt_lolblur),
)}


def instructions(spec: DatasetSpec, folder: Path) -> str:
    lines = [f"{spec.name}: get it from {spec.homepage} and place it under {folder}/"]
    for s in spec.sources:
        how = s.manual or f"download {s.url}"
        lines.append(f"  - {s.filename}: {how}" + (f" (sha256 {s.sha256})" if s.sha256 else ""))
    lines.append(f"  expected layout: {spec.layout}")
    lines.append(f"  then run: restorevar data fetch {spec.name} --root {folder.parent}")
    return "\n".join(lines)


def fetch_dataset(name: str, root: Path, allow_download: bool = True, progress: bool = True) -> dict[str, Any]:
    spec = REGISTRY.get(name) or next((s for s in REGISTRY.values() if s.name.lower() == name.lower()), None)
    if spec is None:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}")
    folder = root / spec.name
    for p in (root, folder):
        if p.exists() and not p.is_dir():
            raise UserError(f"{p} is a file, but datasets live in folders; give a --root folder that holds "
                            f"(or may hold) {spec.name}/")
    notes = []
    if not is_complete(folder) and allow_download:
        for s in spec.sources:
            if s.url is None:
                continue
            try:
                archive = download(s.url, folder / DOWNLOADS / s.filename, s.sha256, progress=progress)
                extract(archive, folder)
            except DownloadError as e:
                notes.append(str(e))
    try:
        splits = spec.adapter(folder)
    except LayoutMissing as e:
        print(instructions(spec, folder), file=sys.stderr)
        return {"dataset": spec.name, "status": "missing", "folder": str(folder), "reason": str(e), "notes": notes}
    counts = {}
    for split, entries in splits.items():
        write_manifest(folder / f"{split}.json", entries)
        counts[split] = {"pairs": sum(e.target_path is not None for e in entries),
                         "unpaired": sum(e.target_path is None for e in entries)}
    mark_complete(folder, {"dataset": spec.name, "splits": counts})
    return {"dataset": spec.name, "status": "ready", "folder": str(folder), "splits": counts,
            "manifests": [str(folder / f"{s}.json") for s in splits], "notes": notes}
