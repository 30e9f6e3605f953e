"""Sample pictures for the run log: degraded | output | clean, for a few validation images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from restorevar.checkpoint import config_from_checkpoint, load_checkpoint, load_components
from restorevar.data.dataset import PairedDataset, PairedTransform
from restorevar.imaging import to_uint8
from restorevar.models import RestoreVAR


@torch.no_grad()
def sample_grid(checkpoint: str | Path, manifest: str | Path, n: int = 4, crop: int = 64) -> np.ndarray:
    """Rows of [degraded, output, clean]; the output is what the checkpoint can produce: a tokenizer
    reconstruction of the clean image, or a restoration once a transformer is present, or a baseline's restoration
    at ``crop`` px (a baseline has no image size of its own; RestoreVAR's is its config's)."""
    ck = load_checkpoint(checkpoint)
    if ck.get("model") == "promptir":
        from restorevar.baselines.promptir import load_promptir

        deg, clean = _items(manifest, n, crop)
        return _rows(deg, load_promptir(checkpoint)(deg).clamp(-1, 1), clean)
    cfg = config_from_checkpoint(ck)
    model = RestoreVAR(cfg).eval()
    comps = ck["components"]
    load_components(model, ck, [n for n in ("vqvae", "transformer", "refiner") if n in comps], checkpoint)
    deg, clean = _items(manifest, n, cfg.vqvae.image_size)
    if "transformer" in comps:
        if "refiner" not in comps:  # before the refiner is trained: decode the discrete prediction
            gen = model.transformer.generate(model.condition(deg), model.vqvae.quantizer)
            out = model.vqvae.decode(gen.f_hat_BChw)
        else:
            out = model.restore(deg).image_B3HW
    else:
        out = model.vqvae.decode(model.vqvae.encode(clean))
    return _rows(deg, out, clean)


def _items(manifest: str | Path, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = PairedDataset(manifest, PairedTransform(crop=size, mode="test", test_protocol="resize"))
    items = [ds[i] for i in range(min(n, len(ds)))]
    return torch.stack([it["degraded"] for it in items]), torch.stack([it["clean"] for it in items])


def _rows(deg: torch.Tensor, out: torch.Tensor, clean: torch.Tensor) -> np.ndarray:
    rows = [np.concatenate(t, axis=1) for t in zip(to_uint8(deg), to_uint8(out), to_uint8(clean))]
    return np.concatenate(rows, axis=0)
