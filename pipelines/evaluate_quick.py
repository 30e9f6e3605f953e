"""DVC stage `evaluate_quick`: PSNR/SSIM on the held-out test split, per degradation, for the degraded input
and for the restored output. Writes metrics.json (DVC metrics). The full evaluation comes later."""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from tqdm import tqdm

from pipelines.params import ROOT, Params, checkpoint_path
from restorevar.checkpoint import config_from_checkpoint, load_checkpoint, load_components
from restorevar.data.dataset import PairedDataset, PairedTransform
from restorevar.data.manifest import CLASS_NAMES
from restorevar.errors import UserError
from restorevar.fileio import atomic_write
from restorevar.models import RestoreVAR
from restorevar.train.common import pick_device

OUT = ROOT / "metrics.json"


def _np01(x_3HW: torch.Tensor) -> np.ndarray:
    return ((x_3HW.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy().astype(np.float64)


def main() -> int:
    started = time.perf_counter()
    try:
        p = Params()
        ckpt_path = checkpoint_path("train_refiner")
        ck = load_checkpoint(ckpt_path)
        model = RestoreVAR(config_from_checkpoint(ck))
        load_components(model, ck, ["vqvae", "transformer", "refiner"], ckpt_path)
    except UserError as e:
        print(f"evaluate_quick: error: {e}", file=sys.stderr)
        return 2
    device = pick_device(p.evaluate.device)
    model.to(device).eval()
    size = model.cfg.vqvae.image_size
    ds = PairedDataset(p.test_manifest, PairedTransform(crop=size, mode="test", test_protocol=p.evaluate.test_protocol))
    rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    idx = list(range(len(ds)))
    bs = p.evaluate.batch_size
    with torch.no_grad():
        for b in tqdm(range(0, len(idx), bs), desc="evaluate_quick", unit="batch"):
            items = [ds[i] for i in idx[b:b + bs]]
            deg = torch.stack([it["degraded"] for it in items]).to(device)
            out = model.restore(deg).image_B3HW
            for it, o in zip(items, out):
                key = f"{it['dataset']}:{CLASS_NAMES[it['degradation']]}"
                gt, di, oi = _np01(it["clean"]), _np01(it["degraded"]), _np01(o)
                for name, img in (("input", di), ("restored", oi)):
                    rows[key][f"{name}_psnr"].append(peak_signal_noise_ratio(gt, img, data_range=1.0))
                    rows[key][f"{name}_ssim"].append(structural_similarity(gt, img, data_range=1.0, channel_axis=2))
    per = {k: {m: round(float(np.mean(v)), 4) for m, v in d.items()} | {"n": len(d["input_psnr"])}
           for k, d in sorted(rows.items())}
    for v in per.values():
        v["psnr_gain"] = round(v["restored_psnr"] - v["input_psnr"], 4)
    result = {
        "profile": p.profile,
        "checkpoint": str(ckpt_path.relative_to(ROOT)),
        "protocol": {"colour": "RGB", "range": "[0,1] float", "resize": f"{p.evaluate.test_protocol} to {size}x{size} "
                     "(Lanczos)", "crop_border": 0, "ssim": "scikit-image defaults (7x7 uniform window)"},
        "per_degradation": per,
        "beats_input_psnr": {k: v["psnr_gain"] > 0 for k, v in per.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(result, indent=1) + "\n"
    atomic_write(OUT, lambda tmp: Path(tmp).write_text(text))
    for k, v in per.items():
        print(f"{k:<28} input {v['input_psnr']:6.2f} dB  restored {v['restored_psnr']:6.2f} dB  "
              f"({v['psnr_gain']:+.2f})  n={v['n']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
