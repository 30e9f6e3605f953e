"""`make pretrain`'s last step: ship the pretrained tokenizer, prior and restoration transformer, weights only, with
their model card.

Reads checkpoints/pretrain_{tokenizer,prior,restoration}.pt and their metrics, data/corpus/corpus.json and
params.yaml; writes restorevar/pretrained/<preset>/{tokenizer.pt, prior.pt, restoration.pt, card.json,
MODEL_CARD.md}, each atomically. The weights keep their config (a checkpoint describes itself) and drop the optimizer
and RNG state. ``--parts`` ships some parts only (the stages that ran), keeping the card's entries of the others.
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
from pipelines.stage_main import stage_main
from restorevar.checkpoint import load_checkpoint, save_checkpoint, stored_config
from restorevar.data.corpus import load_corpus
from restorevar.data.fetch import sha256_of
from restorevar.errors import UserError
from restorevar.fileio import atomic_write
from restorevar.pretrained import ROOT as SHIP_ROOT

PARTS = {"tokenizer": ("pretrain_tokenizer", "vqvae"), "prior": ("pretrain_prior", "transformer"),
         "restoration": ("pretrain_restoration", "transformer")}


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
        raise UserError(f"{path} is missing; run `make pretrain` first") from None


def _relative(value: Any) -> Any:
    """A stage config with the project's paths made relative to it: no card holds the path of the machine it was
    made on."""
    if isinstance(value, dict):
        return {k: _relative(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v) for v in value]
    if isinstance(value, str) and value.startswith(str(ROOT) + os.sep):
        return os.path.relpath(value, ROOT)
    return value


def ship(parts: tuple[str, ...] = tuple(PARTS)) -> dict[str, Any]:
    p = Params()
    preset = p.model.preset
    out = SHIP_ROOT / preset
    out.mkdir(parents=True, exist_ok=True)
    files, stages = {}, {}
    if set(parts) != set(PARTS):  # the other parts stay as the card has them
        old = json.loads((out / "card.json").read_text()) if (out / "card.json").is_file() else {}
        files = {k: v for k, v in old.get("files", {}).items() if k not in parts}
        stages = {k: {**v, "params": _relative(v.get("params", {}))} for k, v in old.get("stages", {}).items()
                  if k not in {PARTS[q][0] for q in parts}}
    for part in parts:
        stage, component = PARTS[part]
        src = checkpoint_path(stage)
        ck = load_checkpoint(src)
        dst = out / f"{part}.pt"
        save_checkpoint(dst, config=stored_config(ck), components={component: ck["components"][component]},
                        step=ck["step"], meta={"pretrained": part, "preset": preset, "stage": stage})
        files[part] = {"file": dst.name, "sha256": sha256_of(dst), "bytes": dst.stat().st_size, "component": component}
        m = _metrics(stage)
        stages[stage] = {"steps": ck["step"], "seconds": m.get("seconds"), "metrics": m.get("metrics", {}),
                         "params": _relative(p.stages[stage].config_dict)}
    files = {k: files[k] for k in PARTS if k in files}
    stages = {PARTS[k][0]: stages[PARTS[k][0]] for k in PARTS if PARTS[k][0] in stages}
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
    names = {"tokenizer": "tokenizer", "prior": "prior", "restoration": "restoration transformer"}
    shipped = [names.get(k, k) for k in PARTS if k in card["files"]]
    what = ", ".join(shipped[:-1]) + f" and {shipped[-1]}" if len(shipped) > 1 else "".join(shipped)
    # card.json is written with sorted keys: its files and stages are shown in pipeline order
    card = {**card, "files": {k: card["files"][k] for k in PARTS if k in card["files"]},
            "stages": {PARTS[k][0]: card["stages"][PARTS[k][0]] for k in PARTS if PARTS[k][0] in card["stages"]}}
    lines = [f"# Pretrained `{card['preset']}` {what}", "",
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
                  f"- validation ({_validated_on(s['params'])}): " + ", ".join(
                      f"{k} {v:.4g}" for k, v in sorted(s["metrics"].items()) if _card_metric(k)), ""]
    lines += ["## Corpus", "", ("No test scene of the benchmark is in it (checked by file and pixel hash); "
                               "the Debian package `mate-backgrounds` is refused."), "",
              "| source | origin | scene | size | source sha256 |", "|---|---|---|---|---|"]
    lines += [f"| {e['source']} | {e['origin']} | {e['scene']} | {e['width']}x{e['height']} | `{e['source_sha256']}` |"
              for e in card["corpus"]]
    return "\n".join(lines) + "\n"


def _validated_on(params: dict[str, Any]) -> str:
    if params.get("data", {}).get("val_photos") == "unseen":
        return "the shipped validation scenes, never trained on"
    return "held-out corpus scenes"


def _card_metric(key: str) -> bool:
    return key.startswith("val_") or key in {f"health/{k}" for k in (
        "tf_acc", "copy_acc", "restored_psnr", "input_psnr", "copy_psnr", "lowfreq_psnr_restored",
        "lowfreq_psnr_input", "cond_swap_changed", "sos_gain")}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="ship the pretrained weights of `make pretrain` with their model card")
    ap.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS),
                    help="ship only these (the stages that ran); the card keeps the others' entries")
    args = ap.parse_args(argv)
    os.chdir(ROOT)

    def summary(card: dict) -> list[str]:
        sizes = ", ".join(f"{k} {v['bytes'] / 1e6:.1f} MB" for k, v in card["files"].items())
        return [f"ship_pretrained: wrote restorevar/pretrained/{card['preset']} ({sizes}) at {card['commit'][:12]}"]

    return stage_main("ship_pretrained", lambda: ship(tuple(args.parts)), summary)


if __name__ == "__main__":
    sys.exit(main())
