"""`restorevar bench`: inference speed of the plain and the fast path, their agreement, training throughput.

For each batch size, the plain path (``PLAIN``: the reference implementation's way, fp32) and the fast path
in each asked dtype are timed component by component and end to end in the same run, interleaved (one run of
every path and component per repeat, so drift in the machine's speed hits all alike): warm-up first, then
the median of ``repeats`` runs, CUDA events on a GPU. Inputs are test photographs shipped with installed
packages, degraded synthetically, so nothing is downloaded. The fast path's tokens and images are compared
with the plain path's: free-running (errors cascade through the scales) and teacher-forced (the same
prefix for both, so each token's own precision effect shows). With random weights the logits are nearly
uniform and bf16 agreement says little; pass ``--checkpoint`` for a trained model's. FLOPs per image of both
paths (matmuls, attention, convolutions) go with the timings.

Training throughput: images per second of one optimiser step of the transformer (teacher forcing; bf16
autocast on CUDA, as the trainer does) and of the tokenizer (L1 + SSIM + VQ), on random-initialised models.

Every phase (a batch size, an agreement check, a training measurement) is its own: ``on_phase`` gets the
result so far after each (``--out`` is rewritten then), and a phase that runs out of GPU memory is recorded
under ``errors`` while the others go on. On CUDA, TF32 matmuls and convolutions are on, as in the official
code, so its fp32 figures compare (``tf32=False`` for strict fp32).

    restorevar bench --preset small --batch-size 1 8 --dtype fp32 bf16 --out results/bench.json
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import resource
import sys
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from restorevar.checkpoint import config_from_checkpoint, load_checkpoint, load_model
from restorevar.data.degrade import DEGRADATIONS
from restorevar.data.photos import load_photo, photos_for
from restorevar.device import pick_device, set_tf32
from restorevar.errors import UserError
from restorevar.fileio import atomic_write, check_output_file
from restorevar.imaging import from_uint8_batch, pooled_psnr
from restorevar.inference.engine import DTYPES, PLAIN, Engine, bf16_problem, fast
from restorevar.metrics.cost import count_flops, device_name, time_interleaved, time_paths, timer_name
from restorevar.models import RestoreVAR
from restorevar.models.presets import PRESETS, get_preset

SCHEMA = 1


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------
@cache
def _square_photo(index: int, size: int) -> np.ndarray:
    photos = photos_for("test")
    img = load_photo(photos[index % len(photos)])
    h, w = img.shape[:2]
    s = min(h, w)
    crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS))


def photo_pairs(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` (clean, degraded) test photographs in [-1, 1], cycling through photos and degradations."""
    rng = np.random.default_rng(seed)
    names = list(DEGRADATIONS)
    clean, deg = [], []
    for i in range(n):
        img = _square_photo(i, size)
        d, _ = DEGRADATIONS[names[i % len(names)]][0](img, rng)
        clean.append(img)
        deg.append(d)
    return from_uint8_batch(np.stack(clean)), from_uint8_batch(np.stack(deg))


# ------------------------------------------------------------------------------------------------
# Agreement
# ------------------------------------------------------------------------------------------------
def _psnr(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """PSNR (dB) of the batches as one signal; None when they are identical, since JSON has no infinity."""
    db = pooled_psnr(a, b)
    return None if math.isinf(db) else db


@torch.no_grad()
def _teacher_forced_argmax(engine: Engine, x_B3HW: torch.Tensor, idx_list: list[torch.Tensor]) -> torch.Tensor:
    m = engine.model
    cond = engine.encode(x_B3HW)
    with engine.autocast():
        x_in = m.vqvae.quantizer.idx_to_teacher_input(idx_list)
        _, hidden = m.transformer(cond, x_in, return_hidden=True)
        return m.transformer.logits_fp32(hidden).argmax(-1)


def agreement(ref: Engine, other: Engine, x_B3HW: torch.Tensor) -> dict[str, Any]:
    """How far ``other`` strays from ``ref`` on the same images (tokens and pixels)."""
    a, b = ref.restore(x_B3HW), other.restore(x_B3HW)
    per_scale = [float((i == j).float().mean()) for i, j in zip(a.generated.idx_list, b.generated.idx_list)]
    sizes = [i[0].numel() for i in a.generated.idx_list]
    tf_ref = _teacher_forced_argmax(ref, x_B3HW, a.generated.idx_list)
    tf_other = _teacher_forced_argmax(other, x_B3HW, a.generated.idx_list)
    return {
        "images": x_B3HW.shape[0],
        "tokens_identical": all(p == 1.0 for p in per_scale),
        "token_agreement": sum(p * s for p, s in zip(per_scale, sizes)) / sum(sizes),
        "token_agreement_per_scale": per_scale,
        "teacher_forced_token_agreement": float((tf_ref == tf_other).float().mean()),
        "image_max_abs_diff": float((a.image_B3HW - b.image_B3HW).abs().max()),
        "image_psnr_db": _psnr(a.image_B3HW, b.image_B3HW),  # of the fast output against the plain one
    }


# ------------------------------------------------------------------------------------------------
# Training throughput
# ------------------------------------------------------------------------------------------------
def _transformer_step(model_cfg, device: torch.device, clean: torch.Tensor, deg: torch.Tensor):
    from restorevar.train.transformer import transformer_loss

    model = RestoreVAR(model_cfg).to(device).train()
    model.vqvae.requires_grad_(False)
    opt = torch.optim.AdamW(model.transformer.parameters(), lr=1e-4)
    amp = device.type == "cuda"  # as the trainer: bf16 autocast on CUDA only

    def step():
        loss, _, _ = transformer_loss(model, deg, clean, 0.0, amp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.transformer.parameters(), 2.0)
        opt.step()
    return step, "bf16 autocast" if amp else "fp32"


def _tokenizer_step(model_cfg, device: torch.device, clean: torch.Tensor):
    from restorevar.train.tokenizer import TokenizerTrainConfig, tokenizer_loss

    vae = RestoreVAR(model_cfg).vqvae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-4)
    cfg = TokenizerTrainConfig()

    def step():
        loss, _, _, _ = tokenizer_loss(vae, vae.encode(clean), clean, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 2.0)
        opt.step()
    return step, "fp32"


def training_throughput(model_cfg, device: torch.device, batch_size: int, warmup: int, steps: int,
                        seed: int, parts=("transformer", "tokenizer")) -> dict[str, Any]:
    """Median seconds per optimiser step and images per second, transformer and tokenizer, random weights."""
    torch.manual_seed(seed)
    clean, deg = (t.to(device) for t in photo_pairs(batch_size, model_cfg.vqvae.image_size, seed))
    out: dict[str, Any] = {}
    for name in parts:
        step, precision = (_transformer_step(model_cfg, device, clean, deg) if name == "transformer"
                           else _tokenizer_step(model_cfg, device, clean))
        sec = time_interleaved(device, {name: step}, warmup, steps)[name]
        out[name] = {"seconds_per_step": sec, "images_per_second": batch_size / sec, "precision": precision,
                     "batch_size": batch_size, "warmup": warmup, "steps": steps, "statistic": "median"}
        del step  # frees the model before the next one is built
    return out


# ------------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------------
def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


def run_bench(*, preset: str = "small", checkpoint: str | Path | None = None, batch_sizes=(1,), dtypes=("fp32",),
              warmup: int = 2, repeats: int = 5, agreement_images: int = 8, train: bool = True,
              train_batch_size: int = 8, train_steps: int = 5, device: str = "auto", seed: int = 0, tf32: bool = True,
              log=print, on_phase=None) -> dict[str, Any]:
    for d in dtypes:
        fast(d)  # an unknown dtype fails here, before any model is built
    if min(batch_sizes) < 1 or repeats < 1 or warmup < 0 or agreement_images < 1:
        raise UserError("batch sizes, repeats and agreement images must be >= 1, warm-up >= 0")
    if train and (train_batch_size < 1 or train_steps < 1):  # found before the inference runs, not after
        raise UserError("--train-batch-size and --train-steps must be >= 1 (or pass --no-train)")
    if not 0 <= seed < 2**64:  # what both NumPy's and torch's generators take
        raise UserError(f"--seed must be in [0, 2**64), got {seed}")
    dev = pick_device(device)
    tf32_on = set_tf32(dev, tf32)
    torch.manual_seed(seed)
    if checkpoint:
        model = load_model(checkpoint, ["vqvae", "transformer", "refiner"])
        weights, preset = f"checkpoint {checkpoint}", "checkpoint"
    else:
        model = RestoreVAR(get_preset(preset))
        weights = f"random (seed {seed})"
    model = model.to(dev).eval()
    size = model.cfg.vqvae.image_size
    # each engine sets its model's memory layout: the plain path gets its own copy
    plain = Engine(copy.deepcopy(model), PLAIN)
    skipped = {d: why for d in dtypes if d == "bf16" and (why := bf16_problem(dev))}
    fasts = {d: Engine(model, fast(d)) for d in dtypes if d not in skipped}
    for d, why in skipped.items():
        log(f"bench: fast {d} skipped: {why}")
    result: dict[str, Any] = {
        "schema": SCHEMA, "device": device_name(dev), "device_type": dev.type, "torch": torch.__version__,
        "preset": preset, "weights": weights, "image_size": size, "timer": timer_name(dev), "statistic": "median",
        "warmup": warmup, "repeats": repeats, "seed": seed, "tf32": tf32_on,
        "inputs": "test photographs shipped with installed packages, centre-cropped, resized, synthetically degraded",
        "paths": {"plain": asdict(PLAIN), **{f"fast_{d}": asdict(e.options) for d, e in fasts.items()}},
        "skipped": skipped, "inference": {}, "speedup": {}, "agreement": {}, "errors": {}, "complete": False,
    }

    def phase(name: str, fn) -> None:
        """Run one phase; out of GPU memory, it is recorded and the next phase goes on. The result so far is
        handed to ``on_phase`` either way."""
        try:
            fn()
        except Exception as e:
            if not _out_of_memory(e):
                raise
            result["errors"][name] = "out of memory: " + str(e).splitlines()[0][:200]
            log(f"bench: {name}: out of memory, skipped")
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        if on_phase is not None:
            on_phase(result)

    def inference(B: int) -> None:
        _, x = photo_pairs(B, size, seed)
        rows = time_paths({"plain_fp32": plain, **{f"fast_{d}": e for d, e in fasts.items()}}, x.to(dev), warmup,
                          repeats)
        result["inference"][f"b{B}"] = rows
        base = rows["plain_fp32"]["seconds_per_image"]["end_to_end"]
        result["speedup"][f"b{B}"] = {d: base / rows[f"fast_{d}"]["seconds_per_image"]["end_to_end"] for d in fasts}
        log(f"bench: batch {B}: " + "; ".join(
            f"{k} {r['seconds_per_image']['end_to_end'] * 1e3:.1f} ms/image" for k, r in rows.items())
            + "".join(f"; fast {d} x{s:.2f}" for d, s in result["speedup"][f"b{B}"].items()))

    def flops() -> None:
        x1 = photo_pairs(1, size, seed)[1].to(dev)
        result["flops_per_image"] = {"plain": count_flops(plain, x1),
                                     **({"fast": count_flops(next(iter(fasts.values())), x1)} if fasts else {})}

    def agree(d: str) -> None:
        _, xa = photo_pairs(agreement_images, size, seed + 1)
        result["agreement"][d] = a = agreement(plain, fasts[d], xa.to(dev))
        log(f"bench: fast {d} vs plain fp32 on {a['images']} images: tokens {a['token_agreement']:.4f} "
            f"(teacher-forced {a['teacher_forced_token_agreement']:.4f}), image PSNR "
            + ("identical" if a["image_psnr_db"] is None else f"{a['image_psnr_db']:.1f} dB")
            + f", max |diff| {a['image_max_abs_diff']:.2e}")

    for B in batch_sizes:
        phase(f"inference_b{B}", lambda B=B: inference(B))
    phase("flops", flops)
    for d in fasts:
        phase(f"agreement_{d}", lambda d=d: agree(d))
    plain = fasts = model = None  # frees the models before the training ones are built
    if train:
        cfg = config_from_checkpoint(load_checkpoint(checkpoint)) if checkpoint else get_preset(preset)
        result["training"] = {}

        def training(name: str) -> None:
            r = training_throughput(cfg, dev, train_batch_size, min(warmup, 2) or 1, train_steps, seed, (name,))
            result["training"].update(r)
            log(f"bench: train {name}: {r[name]['images_per_second']:.2f} images/s "
                f"({r[name]['seconds_per_step'] * 1e3:.0f} ms per step of {r[name]['batch_size']}, "
                f"{r[name]['precision']})")

        for name in ("transformer", "tokenizer"):
            phase(f"training_{name}", lambda name=name: training(name))
    result["process_max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["metrics"] = summary_metrics(result)
    result["complete"] = True
    if on_phase is not None:
        on_phase(result)
    return result


def summary_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The leaf numbers a regression baseline can pick by dotted path (see benchmarks/README.md); a phase
    that failed leaves its numbers out."""
    inf = result["inference"]
    m: dict[str, Any] = {
        "speedup": result["speedup"],
        "ms_per_image": {b: {k: round(r["seconds_per_image"]["end_to_end"] * 1e3, 3) for k, r in rows.items()}
                         for b, rows in inf.items()},
        "token_agreement": {d: a["token_agreement"] for d, a in result["agreement"].items()},
        "teacher_forced_token_agreement": {d: a["teacher_forced_token_agreement"]
                                           for d, a in result["agreement"].items()},
    }
    m["gflops_per_image"] = {k: round(v["end_to_end"] / 1e9, 4) for k, v in result.get("flops_per_image", {}).items()}
    if "training" in result:
        m["train_images_per_second"] = {k: v["images_per_second"] for k, v in result["training"].items()}
    return m


def format_table(result: dict[str, Any]) -> str:
    comps = ("encode", "transformer", "refiner", "decode", "end_to_end")
    head = (f"device: {result['device']}; preset {result['preset']} ({result['image_size']} px), {result['weights']}; "
            f"median of {result['repeats']} after {result['warmup']} warm-up ({result['timer']})")
    lines = [head, "",
             "| batch | path | " + " | ".join(f"{c} ms/img" for c in comps) + " | img/s | speed-up | peak GPU MiB |",
             "|---|---|" + "---|" * (len(comps) + 3)]
    for b, rows in result["inference"].items():
        base = rows["plain_fp32"]["seconds_per_image"]["end_to_end"]
        for k, r in rows.items():
            s = r["seconds_per_image"]
            mem = "-" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**20:.0f}"
            lines.append(f"| {b[1:]} | {k} | " + " | ".join(f"{s[c] * 1e3:.2f}" for c in comps)
                         + f" | {r['images_per_second']:.2f} | {base / s['end_to_end']:.2f} | {mem} |")
    lines += [f"not measured: {name}: {why}" for name, why in result.get("errors", {}).items()]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def add_parser(sub, help: str) -> None:
    b = sub.add_parser("bench", help=help)
    b.add_argument("--preset", default="small", choices=list(PRESETS), help="model size (default small)")
    b.add_argument("--checkpoint", type=Path, help="a trained checkpoint instead of random weights (sets the size)")
    b.add_argument("--batch-size", type=int, nargs="+", default=[1], help="one or more batch sizes (default 1)")
    b.add_argument("--dtype", nargs="+", default=["fp32"], choices=list(DTYPES), help="fast-path dtypes (default fp32)")
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    b.add_argument("--agreement-images", type=int, default=8)
    b.add_argument("--no-train", action="store_true", help="skip the training-throughput measurement")
    b.add_argument("--train-batch-size", type=int, default=8)
    b.add_argument("--train-steps", type=int, default=5)
    b.add_argument("--device", default="auto", help="auto, cpu or cuda")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-tf32", action="store_true", help="strict fp32 on CUDA (TF32 is on by default, as the official)")
    b.add_argument("--out", type=Path, help="write the JSON here (atomically, after every phase)")
    b.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.out:  # the benchmark takes minutes: a path it cannot write must fail now, not after it
        check_output_file(args.out, "--out")
    if args.checkpoint is not None:
        from restorevar.inference import find_checkpoint

        args.checkpoint = find_checkpoint(args.checkpoint)
        if args.out and args.out.resolve() == args.checkpoint.resolve():
            raise UserError(f"--out {args.out} is the checkpoint itself; give the JSON its own file")
    def write(result: dict[str, Any]) -> None:  # after every phase: a later failure keeps what was measured
        text = json.dumps(result, indent=1) + "\n"
        try:
            atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
        except OSError as e:  # the disk filled or the folder vanished during the run
            raise UserError(f"cannot write --out {args.out}: {e.strerror or e}; the log above has the results") from None

    result = run_bench(preset=args.preset, checkpoint=args.checkpoint, batch_sizes=tuple(args.batch_size),
                       dtypes=tuple(dict.fromkeys(args.dtype)), warmup=args.warmup, repeats=args.repeats,
                       agreement_images=args.agreement_images, train=not args.no_train,
                       train_batch_size=args.train_batch_size, train_steps=args.train_steps, device=args.device,
                       seed=args.seed, tf32=not args.no_tf32, log=lambda s: print(s, file=sys.stderr),
                       on_phase=write if args.out else None)
    print(format_table(result))
    if args.out:
        print(f"bench: wrote {args.out}", file=sys.stderr)
    return 0
