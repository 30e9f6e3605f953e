"""The transformer's recipe study: one change at a time against a base recipe, judged on unseen scenes.

Each variant trains the default profile's transformer (the ``cpu`` preset, from the shipped tokenizer and prior,
pairs drawn afresh from the 7 training photographs) and is validated on the shipped validation scenes, which no
stage trains on and which are not the test split. One JSON line per variant: teacher-forced accuracy against the
copy predictor's (overall and scales 0-3), restored (greedy tokens through the tokenizer, no refiner) against
input PSNR, low-frequency fidelity, the gates, and how many greedy tokens a swapped condition changes.

    python -m benchmarks.recipe_study --out study/ --steps 400 base aux=1 identity gate1
    python -m benchmarks.recipe_study --list

A variant is a name from ``VARIANTS`` or ``key=value`` settings of TransformerTrainConfig joined by commas
(``aux_weight=1,loop.warmup_steps=50``); every variant is applied on top of ``--base``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from restorevar.errors import UserError

VARIANTS: dict[str, dict] = {
    "base": {},
    "one_lr": {"gain_lr_mult": 1.0, "condition_lr_mult": 1.0},
    "warmup": {"loop.warmup_steps": 50},
    "gate1": {"gate_init": 1.0},
    "aux": {"aux_weight": 1.0},
    "identity": {"identity_share": 0.5, "identity_steps": 200},
    "token_weighting": {"loss_weighting": "token"},
    "corpus": {"data.photos": "data/corpus/corpus.json"},
}

# the default profile's train_transformer column as committed, with the validation on unseen scenes
BASE = {"init_from": "pretrained", "gain_lr_mult": 10.0, "condition_lr_mult": 10.0, "loss_weighting": "scale",
        "model.preset": "cpu", "tokenizer_checkpoint": "", "data.pairs": "onthefly", "data.photos": "shipped",
        "data.crop": 64, "data.val_photos": "unseen", "loop.batch_size": 8, "loop.lr": 1e-3, "loop.log_every": 25,
        "loop.val_batches": 4}


def parse_variant(text: str) -> dict:
    if text in VARIANTS:
        return dict(VARIANTS[text])
    out = {}
    for part in _top_level_parts(text):
        if "=" not in part:
            raise UserError(f"unknown variant {text!r}; use a name from --list or key=value settings")
        key, value = part.split("=", 1)
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise UserError(f"variant {text!r}: the value of {key} is not YAML ({str(e).splitlines()[0]})") from None
    return out


def _top_level_parts(text: str) -> list[str]:
    """``a=1,b=[x=1,y=2]`` -> ``["a=1", "b=[x=1,y=2]"]``: commas inside brackets belong to a list value."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def nested(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def summary(m: dict) -> dict:
    h = {k.removeprefix("health/"): v for k, v in m.items()}
    keep = ["val_acc", "val_seen_acc", "tf_acc", "copy_acc", "restored_psnr", "input_psnr", "copy_psnr",
            "restored_minus_input", "lowfreq_psnr_restored", "lowfreq_psnr_input", "cond_swap_changed", "sos_gain"]
    out = {k: round(h[k], 4) for k in keep if k in h}
    for k in range(4):
        for name in ("tf_acc", "copy_acc"):
            if f"{name}_scale_{k}" in h:
                out[f"{name}_scale_{k}"] = round(h[f"{name}_scale_{k}"], 4)
    gates = [v for k, v in h.items() if k.startswith("cross_gain_")]
    if gates:
        out["cross_gain_min"], out["cross_gain_max"] = round(min(gates), 4), round(max(gates), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except UserError as e:  # a bad variant or setting: one line, naming it
        print(f"recipe_study: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # --out not writable, or a file
        print(f"recipe_study: error: cannot write the results: {e}; choose another --out", file=sys.stderr)
        return 2


def run(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="*")
    ap.add_argument("--out", default="recipe_study")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--eval-every", type=int, default=0, help="0: at the end only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base", default="", help="settings applied before every variant (key=value,...)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    if args.list:
        for name, settings in VARIANTS.items():
            print(f"{name}: {settings}")
        return 0
    import torch

    from restorevar.config import from_dict
    from restorevar.pretrained import pretrained_path
    from restorevar.train.transformer import TransformerTrainConfig, train_transformer

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.variants or ["base"]:
        flat = {**BASE, "tokenizer_checkpoint": str(pretrained_path("cpu", "tokenizer")),
                "loop.steps": args.steps, "loop.seed": args.seed,
                "loop.eval_every": args.eval_every or args.steps, "loop.ckpt_every": args.steps,
                **(parse_variant(args.base) if args.base else {}), **parse_variant(name)}
        cfg = from_dict(TransformerTrainConfig, nested(flat))
        tag = name.replace("=", "-").replace(",", "_").replace("/", "_")
        curve: list[dict] = []

        every = args.eval_every or args.steps

        def report(step, metrics, checkpoint=None, curve=curve, every=every):
            # the log lines between evaluations repeat the last evaluation's figures: keep the evaluations' own
            if any(k.startswith("health/") for k in metrics) and (step % every == 0 or step == args.steps) and (
                    not curve or curve[-1]["step"] != step):
                curve.append({"step": step, **summary(metrics)})
                c = curve[-1]  # one line per evaluation, so that a long run shows its curve as it goes
                print(f"eval step {step}: tf acc {c.get('tf_acc', float('nan')):.4f} (copy "
                      f"{c.get('copy_acc', float('nan')):.4f}), restored {c.get('restored_psnr', float('nan')):.2f} dB "
                      f"(input {c.get('input_psnr', float('nan')):.2f}), 8x8 "
                      f"{c.get('lowfreq_psnr_restored', float('nan')):.2f} dB", flush=True)

        t0 = time.perf_counter()
        last = train_transformer(cfg, out / tag, report=report)
        row = {"variant": name, "steps": args.steps, "seed": args.seed, "seconds": round(time.perf_counter() - t0, 1),
               **summary(last), "curve": curve}
        line = json.dumps(row)
        print(line, flush=True)
        with open(out / "results.jsonl", "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
