"""DVC stage `scale_space`: the paper's scale-space analysis (Fig. 2, 9, 13), quantitatively.

For test pairs, the tokenizer decodes the clean image's token pyramid with its coarse scales (or its fine
scales) taken from the degraded image, and both pyramids unchanged; then the same with the model's
restored tokens in place of the degraded ones. Each decoded image is scored by PSNR against the clean
image and against the other image. Writes results/scale_space/{per_image.parquet,summary.json,grid.png}.
"""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipelines import tuning
from pipelines.params import ROOT, Params, checkpoint_path
from pipelines.stage_main import stage_main
from restorevar.analysis import scale_swap_images, swap_scales
from restorevar.checkpoint import load_model
from restorevar.data.dataset import PairedDataset, PairedTransform
from restorevar.data.manifest import CLASS_NAMES
from restorevar.device import pick_device
from restorevar.errors import UserError
from restorevar.fileio import atomic_write, write_png
from restorevar.imaging import psnr_per_image, to_uint8
from restorevar.stats.paired import mean_ci

OUT = ROOT / "results" / "scale_space"
# the other pyramid is the degraded image's, or the model's restored one; rows name them alike
SWAP_NAMES = {"clean": "clean", "degraded": "other", "restored": "other", "coarse_from_degraded": "coarse_from_other",
              "fine_from_degraded": "fine_from_other", "coarse_from_restored": "coarse_from_other",
              "fine_from_restored": "fine_from_other"}


def _psnr(a_B3HW: torch.Tensor, b_B3HW: torch.Tensor) -> np.ndarray:
    return psnr_per_image(a_B3HW, b_B3HW).numpy()


def _finite(v: float) -> float | None:
    return v if np.isfinite(v) else None


def summary_table(df: pd.DataFrame, confidence: float) -> list[dict]:
    """Mean [CI] per (pair, swap, dataset, degradation) and PSNR column, ready for strict JSON.

    A decoding that equals the other image exactly has PSNR +inf (the restored pyramid against itself always
    does). Its cell's mean is infinite, which JSON cannot hold, so it is written as null and ``n_identical``
    counts those images; NaN intervals (fewer than two images) are null too.
    """
    table = []
    for (pair, swap, dataset, deg), g in df.groupby(["pair", "swap", "dataset", "degradation"], sort=True):
        for col in ("psnr_to_clean", "psnr_to_other"):
            x = g[col].to_numpy(dtype=np.float64)
            identical = int(np.isposinf(x).sum())
            m, lo, hi = (float("inf"),) * 3 if identical else mean_ci(x, confidence)
            table.append({"pair": pair, "swap": swap, "dataset": dataset, "degradation": deg, "value": col,
                          "mean": _finite(m), "ci": [_finite(lo), _finite(hi)], "n": len(g),
                          "n_identical": identical})
    return table


@torch.no_grad()
def run() -> dict:
    started = time.perf_counter()
    p = Params()
    sp = p.ablations.scale_space
    device = pick_device(p.evaluate.device)
    tok = load_model(checkpoint_path("train_tokenizer"), ["vqvae"]).to(device).eval()
    model = load_model(checkpoint_path("train_refiner"), ["vqvae", "transformer", "refiner"]).to(device).eval()
    K = len(tok.cfg.vqvae.patch_nums)
    if not 0 < sp.split < K:
        raise UserError(f"ablations.{p.profile}.scale_space.split must lie in 1..{K - 1} for {K} scales, got {sp.split}")
    size = tok.cfg.vqvae.image_size
    ds = PairedDataset(p.test_manifest, PairedTransform(crop=size, mode="test"))
    picked: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, e in enumerate(ds.entries):
        if len(picked[(e.dataset, e.degradation)]) < sp.images_per_degradation:
            picked[(e.dataset, e.degradation)].append(i)
    rows, grid_rows = [], []
    for (dataset, deg), idx in sorted(picked.items()):
        items = [ds.item(i) for i in idx]
        clean = torch.stack([it["clean"] for it in items]).to(device)
        degraded = torch.stack([it["degraded"] for it in items]).to(device)
        restored_idx = model.transformer.generate(model.condition(degraded), model.vqvae.quantizer).idx_list
        clean_idx = tok.vqvae.image_to_idx(clean)
        pairs = {"degraded": (degraded, scale_swap_images(tok.vqvae, clean, degraded, sp.split))}
        rest = {"clean": tok.vqvae.idx_to_image(clean_idx), "restored": tok.vqvae.idx_to_image(restored_idx),
                "coarse_from_restored": tok.vqvae.idx_to_image(swap_scales(clean_idx, restored_idx, range(sp.split))),
                "fine_from_restored": tok.vqvae.idx_to_image(swap_scales(clean_idx, restored_idx, range(sp.split, K)))}
        pairs["restored"] = (rest["restored"], rest)
        for other, (other_img, images) in pairs.items():
            for swap, img in images.items():
                to_clean, to_other = _psnr(img, clean), _psnr(img, other_img)
                for j, it in enumerate(items):
                    rows.append({"pair": other, "swap": SWAP_NAMES[swap], "dataset": dataset, "degradation": CLASS_NAMES[deg], "image_id": str(it["id"]),
                        "psnr_to_clean": float(to_clean[j]), "psnr_to_other": float(to_other[j])})
        for j in range(min(sp.grid_images, len(items))):
            imgs = pairs["degraded"][1]
            grid_rows.append(np.concatenate([to_uint8(degraded[j]), to_uint8(clean[j])] +
                                            [to_uint8(imgs[k][j]) for k in ("degraded", "clean", "coarse_from_degraded",
                                                                          "fine_from_degraded")], axis=1))
    df = pd.DataFrame(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write(OUT / "per_image.parquet", lambda tmp: df.to_parquet(tmp, index=False))
    if grid_rows:
        write_png(OUT / "grid.png", np.concatenate(grid_rows, axis=0))
    table = summary_table(df, p.stats.confidence)
    summary = {"profile": p.profile, "split": sp.split, "scales": K, "coarse": list(range(sp.split)),
               "fine": list(range(sp.split, K)), "decoder": "the tokenizer's (discrete latents)",
               "grid_columns": ["input (degraded)", "target (clean)", "degraded tokens", "clean tokens",
                                "coarse from degraded", "fine from degraded"],
               "table": table, "seconds": round(time.perf_counter() - started, 1)}
    text = json.dumps(summary, indent=1, allow_nan=False) + "\n"
    atomic_write(OUT / "summary.json", lambda tmp: Path(tmp).write_text(text))
    return summary


def _work() -> dict:
    p = Params()
    return tuning.run_task(run, what="scale_space", device=p.evaluate.device, address=p.ray_address, root=ROOT)


def main() -> int:
    return stage_main("scale_space", _work, lambda s: [
        f"scale_space: {len(s['table']) // 2} cells (pair x swap x degradation), split {s['split']}/{s['scales']} "
        + f"scales, {s['seconds']} s"])


if __name__ == "__main__":
    sys.exit(main())
