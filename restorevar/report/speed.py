"""The report's "Inference speed" section, from results/bench.json (`restorevar bench`, stage `bench`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from restorevar.report.document import Document

COMPONENTS = ("encode", "transformer", "refiner", "decode", "end_to_end")


def speed_table(bench: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for b, paths in bench["inference"].items():
        base = paths["plain_fp32"]["seconds_per_image"]["end_to_end"]
        for name, r in paths.items():
            s = r["seconds_per_image"]
            mem = r.get("peak_memory_bytes")
            rows.append({"batch": int(b[1:]), "path": name, **{f"{c} ms": f"{s[c] * 1e3:.2f}" for c in COMPONENTS},
                         "images/s": f"{r['images_per_second']:.2f}", "speed-up": f"{base / s['end_to_end']:.2f}×",
                         "peak GPU MiB": "—" if mem is None else f"{mem / 2**20:.0f}"})
    return pd.DataFrame(rows)


def agreement_table(bench: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([{
        "fast path": d, "images": a["images"], "token agreement": f"{a['token_agreement']:.4f}",
        "teacher-forced agreement": f"{a['teacher_forced_token_agreement']:.4f}",
        "image PSNR vs plain (dB)": "identical" if a["image_psnr_db"] is None else f"{a['image_psnr_db']:.1f}",
        "max |diff|": f"{a['image_max_abs_diff']:.2e}"} for d, a in bench["agreement"].items()])


def training_table(bench: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([{"component": k, "batch": r["batch_size"], "precision": r["precision"],
                          "ms / step": f"{r['seconds_per_step'] * 1e3:.1f}", "images/s": f"{r['images_per_second']:.2f}"}
                         for k, r in bench.get("training", {}).items()])


def speed_section(doc: Document, results: Path) -> None:
    doc.heading("Inference speed: plain vs fast path")
    path = Path(results) / "bench.json"
    if not path.exists():
        doc.text("results/bench.json not found: run `dvc repro bench` (or `restorevar bench`).")
        return
    bench = json.loads(path.read_text())
    where = (f"{bench['device']}; torch {bench['torch']}; {bench['image_size']} px, {bench['weights']}; median of "
             f"{bench['repeats']} runs after {bench['warmup']} warm-up ({bench['timer']})")
    doc.text("The plain path runs the model as the reference implementation does (cross-attention K/V recomputed "
             "in every block at every scale, KV caches grown by concatenation, fp32, NCHW convolutions); the fast "
             "path computes cross-attention K/V once per image, writes into a preallocated KV cache and runs the "
             "VQ-VAE channels-last, in fp32 or bf16 (head, token accumulation, attention normalisation and residual "
             "stream in fp32).", note=True)
    doc.table(speed_table(bench), f"Milliseconds per image by component; speed-up of end to end over plain fp32; {where}")
    flops = bench.get("flops_per_image", {})
    if flops:
        doc.text("FLOPs per image (matmuls, attention, convolutions): " + "; ".join(
            f"{k} {v['end_to_end'] / 1e9:.3f} GFLOP (transformer {v['transformer'] / 1e9:.3f})" for k, v in flops.items())
            + ".")
    for d, why in bench.get("skipped", {}).items():
        doc.text(f"fast {d}: not measured ({why}).")
    if bench["agreement"]:
        doc.table(agreement_table(bench), "Fast path against plain fp32 on the same test photographs: greedy tokens "
                  "free-running (errors cascade through the scales) and teacher-forced (same prefix), and the "
                  "restored images")
    if bench.get("training"):
        t = next(iter(bench["training"].values()))
        doc.table(training_table(bench), f"Training throughput, one optimiser step, random weights; median of "
                  f"{t['steps']} steps after {t['warmup']} warm-up; {bench['device']}")
