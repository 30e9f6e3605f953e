"""The embedded synthetic all-in-one benchmark: shipped photographs x seeded degradations.

Every pair draws from its own generator seeded by (seed, split, degradation, index), so any pair can be
regenerated alone and the same seed always gives byte-identical files. A run writes into a temp folder
beside the output folder and moves its files in only when all of them are written: an interrupted run
leaves the output folder as it was, and an existing benchmark is replaced only when asked to.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from restorevar.data.degrade import DEGRADATIONS
from restorevar.data.manifest import Entry, read_manifest, write_manifest
from restorevar.data.photos import Photo, load_photo, photos_for
from restorevar.errors import UserError
from restorevar.fileio import atomic_write, check_output_folder, move_into_place, staging_folder_beside, write_png

SYNTH_VERSION = 1
SPLITS = ("train", "test")
DATASET_NAMES = {"haze": "synth-haze", "rain": "synth-rain", "snow": "synth-snow", "lowlight": "synth-lowlight",
                 "motion_blur": "synth-blur", "haze_rain": "synth-cdd", "lowlight_blur": "synth-lolblur"}
MAX_PER_DEGRADATION = 100_000  # pairs of one split and degradation: a full benchmark's worth and more


@dataclass
class SynthConfig:
    size: int = 64
    train_per_degradation: int = 64
    test_per_degradation: int = 8
    seed: int = 0
    min_crop_fraction: float = 0.4  # crop side as a fraction of the photo's shorter side

    def validate(self) -> None:
        if self.size < 16 or self.size > 1024:
            raise UserError(f"--size must be between 16 and 1024 pixels, got {self.size}")
        for flag, n in (("--train-per-degradation", self.train_per_degradation),
                        ("--test-per-degradation", self.test_per_degradation)):
            if not 0 <= n <= MAX_PER_DEGRADATION:
                raise UserError(f"{flag} must be between 0 and {MAX_PER_DEGRADATION}, got {n}")
        if not 0 < self.min_crop_fraction <= 1:
            raise UserError(f"min_crop_fraction must be in (0, 1], got {self.min_crop_fraction}")
        check_seed(self.seed)


def check_seed(seed: int) -> None:
    """numpy's generators take seeds in [0, 2**128); a negative one would fail mid-run with a traceback."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise UserError(f"--seed must be an integer in [0, 2**63), got {seed!r}")


def random_crop(photo: np.ndarray, size: int, rng: np.random.Generator, min_fraction: float) -> tuple[np.ndarray, dict]:
    H, W = photo.shape[:2]
    side = round(min(H, W) * rng.uniform(min_fraction, 1.0))
    top, left = int(rng.integers(0, H - side + 1)), int(rng.integers(0, W - side + 1))
    crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.Resampling.LANCZOS)
    out = np.asarray(crop)
    flip = bool(rng.random() < 0.5)
    if flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out), {"top": top, "left": left, "side": side, "hflip": flip}


def degradations_for(split: str) -> list[str]:
    return [n for n, (_, _, in_train) in DEGRADATIONS.items() if in_train or split == "test"]


# what a run writes at the top of its folder; ``overwrite`` replaces exactly these and nothing else
OUTPUTS = (*SPLITS, *(f"{s}.json" for s in SPLITS), "synth_info.json")


def synth(out: str | Path, cfg: SynthConfig, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Write the benchmark into ``out``, a new or empty folder (or, with ``overwrite``, an earlier run's).

    Everything is written into a temp folder beside ``out`` and moved in when finished, so an interrupted
    run leaves ``out`` as it was.
    """
    cfg.validate()
    out = Path(out)
    check_output_folder(out, overwrite, "benchmark", "synth_info.json")
    if overwrite and out.is_dir():
        _check_only_own_files(out)
    staged = staging_folder_beside(out, "synth")
    try:
        info = _write(staged, cfg, progress)
    except OSError as e:  # disk full, I/O error: one line, and nothing of the half-written run is left
        shutil.rmtree(staged, ignore_errors=True)
        raise UserError(f"could not write the benchmark beside {out}: {e.strerror or e}; free space or "
                        "choose another --out") from None
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    move_into_place(staged, out, OUTPUTS, "the benchmark")
    return info


def _check_only_own_files(out: Path) -> None:
    """Refuse to replace an earlier benchmark whose split folders hold a file its manifests do not list: it is
    someone's own, and replacing a split folder would delete it."""
    listed: set[str] = set()
    for split in SPLITS:
        manifest = out / f"{split}.json"
        if not manifest.is_file():
            continue
        for e in read_manifest(manifest):
            listed.update(os.path.normpath(p) for p in (e.image_path, e.target_path) if p)
    for split in SPLITS:
        folder = out / split
        if folder.is_symlink() or not folder.exists():
            continue
        for dirpath, _, filenames in os.walk(folder):
            for name in sorted(filenames):
                rel = os.path.relpath(os.path.join(dirpath, name), out)
                if os.path.normpath(rel) not in listed:
                    raise UserError(f"--out {out} holds {rel}, which the earlier benchmark there did not write, "
                                    "so --overwrite will not delete it; move it away or choose another --out")


def _write(out: Path, cfg: SynthConfig, progress: bool) -> dict[str, Any]:
    started = time.perf_counter()
    photos: dict[str, list[tuple[Photo, np.ndarray]]] = {
        s: [(p, load_photo(p)) for p in photos_for(s)] for s in SPLITS}
    jobs = [(s, d, i) for s in SPLITS for d in degradations_for(s)
            for i in range(cfg.train_per_degradation if s == "train" else cfg.test_per_degradation)]
    manifests: dict[str, list[Entry]] = {s: [] for s in SPLITS}
    deg_index = {n: k for k, n in enumerate(DEGRADATIONS)}
    for split, deg, i in tqdm(jobs, desc="synth pairs", unit="pair", disable=not progress):
        rng = np.random.default_rng([cfg.seed, SPLITS.index(split), deg_index[deg], i])
        pool = photos[split]
        photo, pixels = pool[i % len(pool)]  # round-robin keeps scenes balanced
        clean, crop = random_crop(pixels, cfg.size, rng, cfg.min_crop_fraction)
        fn, cls, _ = DEGRADATIONS[deg]
        degraded, params = fn(clean, rng)
        pid = f"{deg}_{i:05d}"
        rel_in, rel_gt = f"{split}/{deg}/input/{pid}.png", f"{split}/{deg}/target/{pid}.png"
        write_png(out / rel_in, degraded)
        write_png(out / rel_gt, clean)
        manifests[split].append(Entry(rel_in, rel_gt, cls, DATASET_NAMES[deg], {
            "id": pid, "split": split, "degradation_name": deg, "source_photo": photo.name,
            "crop": crop, "params": params}))
    for split in SPLITS:
        write_manifest(out / f"{split}.json", manifests[split])
    info = {
        "synth_version": SYNTH_VERSION, "config": cfg.__dict__,
        "photos": {s: [p.name for p, _ in photos[s]] for s in SPLITS},
        "pairs": {s: len(manifests[s]) for s in SPLITS},
        "degradations": {s: degradations_for(s) for s in SPLITS},
    }
    text = json.dumps(info, indent=1, sort_keys=True) + "\n"
    atomic_write(out / "synth_info.json", lambda tmp: Path(tmp).write_text(text))
    info["seconds"] = round(time.perf_counter() - started, 2)
    return info
