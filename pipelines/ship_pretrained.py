"""`make pretrain`'s last step: ship the pretrained tokenizer and prior, weights only, with their model card.

Reads checkpoints/pretrain_{tokenizer,prior}.pt and their metrics, data/corpus/corpus.json and params.yaml;
writes restorevar/pretrained/<preset>/{tokenizer.pt, prior.pt, card.json, MODEL_CARD.md}, each atomically.
The weights keep their config (a checkpoint describes itself) and drop the optimizer and RNG state.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from pipelines.params import ROOT, Params, checkpoint_path
from restorevar.checkpoint import load_checkpoint, save_checkpoint, stored_config
from restorevar.data.corpus import load_corpus
from restorevar.data.fetch import sha256_of
from restorevar.errors import UserError
from restorevar.fileio import atomic_write
from restorevar.pretrained import ROOT as SHIP_ROOT

PARTS = {"tokenizer": ("pretrain_tokenizer", "vqvae"), "prior": ("pretrain_prior", "transformer")}


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def _metrics(stage: str) -> dict[str, Any]:
    path = checkpoint_path(stage).with_suffix(".json")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing; run `dvc repro pretrain/dvc.yaml` (make pretrain) first") from None


def ship() -> dict[str, Any]:
    p = Params()
    preset = p.model.preset
    out = SHIP_ROOT / preset
    out.mkdir(parents=True, exist_ok=True)
    files, stages = {}, {}
    for part, (stage, component) in PARTS.items():
        src = checkpoint_path(stage)
        ck = load_checkpoint(src)
        dst = out / f"{part}.pt"
        save_checkpoint(dst, config=stored_config(ck), components={component: ck["components"][component]},
                        step=ck["step"], meta={"pretrained": part, "preset": preset, "stage": stage})
        files[part] = {"file": dst.name, "sha256": sha256_of(dst), "bytes": dst.stat().st_size, "component": component}
        m = _metrics(stage)
        stages[stage] = {"steps": ck["step"], "seconds": m.get("seconds"), "metrics": m.get("metrics", {}),
                         "params": p.stages[stage].config_dict}
    photos = p.stages["pretrain_tokenizer"].config.data.photos
    corpus = [{k: e[k] for k in ("source", "origin", "scene", "source_sha256", "sha256", "width", "height")}
              for e in load_corpus(photos)]
    debs = json.loads((Path(photos) if Path(photos).suffix == ".json" else Path(photos) / "corpus.json").read_text())
    card = {"preset": preset, "model": {"preset": preset, "overrides": list(p.model.overrides)},
            "commit": _commit(), "files": files, "stages": stages, "corpus": corpus,
            "deb_packages": debs.get("deb_packages", {}), "torch": torch.__version__}
    text = json.dumps(card, indent=1, sort_keys=True) + "\n"
    atomic_write(out / "card.json", lambda tmp: Path(tmp).write_text(text))
    md = model_card_markdown(card)
    atomic_write(out / "MODEL_CARD.md", lambda tmp: Path(tmp).write_text(md))
    return card


def model_card_markdown(card: dict[str, Any]) -> str:
    lines = [f"# Pretrained `{card['preset']}` tokenizer and prior", "",
             ("Made by `make pretrain` (pretrain/dvc.yaml, then `python -m pipelines.ship_pretrained`); "
              "the default profile's training starts from these files. `card.json` holds everything below "
              "as data."), "", f"- commit: `{card['commit']}`", f"- torch: {card['torch']}", "",
             "## Files", "", "| file | component | bytes | sha256 |", "|---|---|---|---|"]
    lines += [f"| {f['file']} | {f['component']} | {f['bytes']} | `{f['sha256']}` |" for f in card["files"].values()]
    lines += ["", "## Training", ""]
    for stage, s in card["stages"].items():
        loop = s["params"].get("loop", {})
        lines += [f"### {stage}", "", f"- steps: {s['steps']} (batch {loop.get('batch_size')}, lr {loop.get('lr')})",
                  f"- wall time: {s['seconds']} s", f"- data: `{json.dumps(s['params'].get('data', {}), sort_keys=True)}`",
                  "- validation (held-out corpus scenes): " + ", ".join(
                      f"{k} {v:.4g}" for k, v in sorted(s["metrics"].items()) if k.startswith("val_")), ""]
    lines += ["## Corpus", "", ("No test scene of the benchmark is in it (checked by file and pixel hash); "
                               "the Debian package `mate-backgrounds` is refused."), "",
              "| source | origin | scene | size | source sha256 |", "|---|---|---|---|---|"]
    lines += [f"| {e['source']} | {e['origin']} | {e['scene']} | {e['width']}x{e['height']} | `{e['source_sha256']}` |"
              for e in card["corpus"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    os.chdir(ROOT)
    try:
        card = ship()
    except UserError as e:
        print(f"ship_pretrained: error: {e}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{k} {v['bytes'] / 1e6:.1f} MB" for k, v in card["files"].items())
    print(f"ship_pretrained: wrote restorevar/pretrained/{card['preset']} ({sizes}) at {card['commit'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
