"""DVC stage `data`: the profile's training and test manifests in data/prepared/.

``source: synth`` writes the embedded synthetic benchmark there. ``source: datasets`` fetches each named
dataset of the registry (download with checksums and resume, or adapt what is already under ``root``)
and merges their manifests, with absolute paths, into one train and one test manifest. ``source:
manifests`` merges given manifests of the official code's format (paths relative to ``root``, as its
trainset.json and test_jsons are to its repository), so training and testing use its exact splits.
Every entry keeps the id its relative path gave it, so results pair up on any machine.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from pipelines.params import ROOT, Params
from pipelines.params_schema import DataParams
from pipelines.stage_main import stage_main
from restorevar.data.manifest import Entry, check_manifest, count_table, read_manifest, write_manifest
from restorevar.data.registry import fetch_dataset
from restorevar.data.synth import SynthConfig, synth
from restorevar.errors import UserError


def _absolute(e: Entry, base: Path) -> Entry:
    e.extra.setdefault("id", e.id)  # from the relative path, before it becomes this machine's absolute one
    img, tgt = e.resolve(base)
    e.image_path, e.target_path = str(img.resolve()), (str(tgt.resolve()) if tgt else None)
    return e


def _from_manifests(d: DataParams, out: Path) -> None:
    base = ROOT / d.root
    for split, names in (("train", d.train_manifests), ("test", d.test_manifests)):
        # a manifest's own name is relative to `root` too, as the official repository keeps trainset.json there
        entries = [_absolute(e, base) for name in names for e in read_manifest(base / name)]
        write_manifest(out / f"{split}.json", entries)
        print(f"data: {split}: {len(entries)} pairs from {len(names)} manifest(s), paths under {base}")


def _real(d: DataParams, out: Path) -> None:
    merged: dict[str, list[Entry]] = {"train": [], "test": []}
    for name in d.datasets:
        result = fetch_dataset(name, ROOT / d.root, allow_download=d.allow_download, progress=True)
        if result["status"] != "ready":
            raise UserError(f"dataset {name} is not ready ({result['reason']}); follow the instructions above, "
                            f"or drop it from data.{{profile}}.datasets in params.yaml")
        for manifest in result["manifests"]:
            split = Path(manifest).stem
            if split not in merged:
                continue
            merged[split] += [_absolute(e, Path(manifest).parent) for e in read_manifest(manifest)]
    for split, entries in merged.items():
        if not entries:
            raise UserError(f"the datasets {', '.join(d.datasets)} give no {split} pairs")
        write_manifest(out / f"{split}.json", entries)


def _work() -> None:
    p = Params()
    out = p.data_dir
    if out.exists():
        shutil.rmtree(out)
    d = p.data
    if d.source == "synth":
        info = synth(out, SynthConfig(size=d.size, train_per_degradation=d.train_per_degradation,
                                      test_per_degradation=d.test_per_degradation, seed=d.seed))
        print(f"data: synthetic benchmark, {info['pairs']} pairs, {info['seconds']} s")
    elif d.source == "manifests":
        _from_manifests(d, out)
    else:
        _real(d, out)
    # real datasets stay where `data fetch` put them: their manifests point outside data/prepared
    entries, problems = check_manifest(out / "train.json", other=out / "test.json",
                                       allow_outside_root=d.source != "synth")
    print(count_table(entries))
    if problems:
        raise UserError(f"{len(problems)} problem(s) in the training manifest, first: {problems[0]}")


def main() -> int:
    return stage_main("data", _work)


if __name__ == "__main__":
    sys.exit(main())
