"""Per degradation, on the unseen validation scenes: what the transformer's tokens and the refiner each do.

For a study's checkpoint (or a refiner trained here on its transformer), one row per degradation: PSNR and 8 x 8
low-frequency fidelity of the degraded input, of the input's continuous latent decoded (``autoencoded``: what any
model painting through this autoencoder can keep of its input), of ``copy_input`` (its own tokens decoded), of the
transformer's greedy tokens decoded without the refiner, and of the whole model. The validation scenes are never trained on and
are not the test split, so a choice made from this table is allowed; the test split's table is the report's.

    python -m benchmarks.per_degradation checkpoints/train_refiner.pt
    python -m benchmarks.per_degradation --train-refiner "model.overrides=[refiner.residual=full]" \\
        --decoder checkpoints/finetune_decoder.pt --transformer checkpoints/train_transformer.pt --out per_deg/

``--zero cond_shift_h,cond_shift_img`` zeroes those transformer modules (weights and biases) before evaluating: which
part of the condition path moves which degradation, without retraining.
``--train-refiner SETTINGS`` trains a refiner (``key=value`` settings of RefinerTrainConfig, on top of the default
profile's ``train_refiner`` column and the transformer checkpoint's own model config) and evaluates it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.recipe_study import nested, parse_variant
from restorevar.errors import UserError

# the default profile's train_refiner column, as committed
REFINER_BASE = {"data.pairs": "onthefly", "data.photos": "shipped", "data.crop": 64, "data.val_photos": "unseen",
                "loop.steps": 150, "loop.batch_size": 8, "loop.lr": 0.001, "loop.ckpt_every": 150,
                "loop.log_every": 50, "loop.eval_every": 150}
METHODS = ("input", "autoencoded", "copy_input", "tokens", "restored")


def evaluate(model, batches) -> dict[str, dict[str, dict[str, float]]]:
    """{degradation: {method: {"psnr", "lowfreq_psnr", "n"}}}, means over the validation pairs."""
    import torch

    from restorevar.data.manifest import CLASS_NAMES
    from restorevar.imaging import lowfreq_psnr_per_image, psnr_per_image
    from restorevar.metrics.scoring import copy_input_method

    copy_input = copy_input_method(model.vqvae, torch.device("cpu"))  # the evaluation's own baseline
    autoencoded = copy_input_method(model.vqvae, torch.device("cpu"), continuous=True)
    sums: dict[tuple[str, str], list[float]] = {}
    with torch.no_grad():
        for b in batches:
            deg, clean = b["degraded"], b["clean"]
            out = model.restore(deg)
            vq = model.vqvae
            images = {"input": deg, "autoencoded": torch.stack(autoencoded(None, deg)),
                      "copy_input": torch.stack(copy_input(None, deg)),
                      "tokens": vq.decode(out.generated.f_hat_BChw), "restored": out.image_B3HW}
            for method, x_B3HW in images.items():
                p_B, lf_B = psnr_per_image(x_B3HW, clean), lowfreq_psnr_per_image(x_B3HW, clean)
                for i, cls in enumerate(b["degradation"]):
                    s = sums.setdefault((CLASS_NAMES[int(cls)], method), [0.0, 0.0, 0])
                    s[0] += float(p_B[i])
                    s[1] += float(lf_B[i])
                    s[2] += 1
    table: dict[str, dict[str, dict[str, float]]] = {}
    for (deg, method), (p, lf, n) in sorted(sums.items()):
        table.setdefault(deg, {})[method] = {"psnr": round(p / n, 2), "lowfreq_psnr": round(lf / n, 2), "n": n}
    return table


def zero_modules(transformer, names: str) -> None:
    import torch

    for name in filter(None, (n.strip() for n in names.split(","))):
        module = getattr(transformer, name, None)
        if not isinstance(module, torch.nn.Module) or not list(module.parameters()):
            raise UserError(f"--zero: the transformer has no module {name!r} with weights; "
                            "name one of its cond_* modules (cond_shift_h, cond_shift_c, cond_shift_img, cond_inject)")
        with torch.no_grad():
            for p in module.parameters():
                p.zero_()


def print_table(name: str, table: dict) -> None:
    print(f"{name}: PSNR / 8 x 8 PSNR (dB) on the unseen validation scenes")
    print(f"{'degradation':<14}{'n':>4}" + "".join(f"{m:>19}" for m in METHODS))
    for deg, row in table.items():
        n = row["input"]["n"]
        cells = "".join(f"{row[m]['psnr']:>11.2f} / {row[m]['lowfreq_psnr']:5.2f}" for m in METHODS)
        print(f"{deg:<14}{n:>4}{cells}")


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except UserError as e:
        print(f"per_degradation: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"per_degradation: error: cannot write the results: {e}; choose another --out", file=sys.stderr)
        return 2


def run(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*", help="whole-model checkpoints (vqvae, transformer and refiner)")
    ap.add_argument("--train-refiner", default=None, metavar="SETTINGS")
    ap.add_argument("--decoder", default="checkpoints/finetune_decoder.pt")
    ap.add_argument("--transformer", default="checkpoints/train_transformer.pt")
    ap.add_argument("--out", default="per_degradation")
    ap.add_argument("--val-batches", type=int, default=8, help="batches of 8 validation pairs")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--zero", default="", metavar="MODULES", help="transformer modules to zero, comma-separated")
    args = ap.parse_args(argv)
    if not args.checkpoints and args.train_refiner is None:
        raise UserError("name a checkpoint, or --train-refiner SETTINGS (\"\" for the default column)")
    import torch

    from restorevar.checkpoint import load_checkpoint, load_model
    from restorevar.config import from_dict
    from restorevar.train.common import DataConfig, LoopConfig, make_train_val
    from restorevar.train.refiner import RefinerTrainConfig, train_refiner

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(str(c), Path(c)) for c in args.checkpoints]
    if args.train_refiner is not None:
        # the transformer's own model (its training config's preset and overrides), then the settings' overrides
        model = load_checkpoint(args.transformer)["meta"].get("train_config", {}).get("model")
        if not isinstance(model, dict) or not isinstance(model.get("overrides"), list):
            raise UserError(f"{args.transformer} does not say which model it trained; give a stage's checkpoint")
        flat = {**REFINER_BASE, "decoder_checkpoint": args.decoder, "transformer_checkpoint": args.transformer,
                **parse_variant(args.train_refiner)}
        flat["model.preset"] = model["preset"]
        flat["model.overrides"] = [*model["overrides"], *flat.get("model.overrides", [])]
        cfg = from_dict(RefinerTrainConfig, nested(flat))
        tag = (args.train_refiner or "default").replace("=", "-").replace(",", "_").replace("/", "_")
        train_refiner(cfg, out / tag)
        runs.append((f"refiner {args.train_refiner or 'default'}", out / tag / "last.pt"))
    data = DataConfig(pairs="onthefly", photos="shipped", crop=64, val_photos="unseen")
    _, val = make_train_val(data, LoopConfig(batch_size=8, val_batches=args.val_batches, steps=1), torch.device("cpu"))
    results = {}
    for name, path in runs:
        model = load_model(path, ["vqvae", "transformer", "refiner"])
        zero_modules(model.transformer, args.zero)
        results[name] = evaluate(model, val)
        print_table(name, results[name])
    (out / "per_degradation.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
