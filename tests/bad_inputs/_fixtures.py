"""Files the bad-input tables share: a complete tiny checkpoint and a small input image."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from restorevar.checkpoint import save_checkpoint
from restorevar.config import apply_overrides
from restorevar.models import RestoreVAR, get_preset


def _dotted(sections: dict[str, dict[str, Any]]) -> list[str]:
    """``{"transformer": {"width": 96}}`` -> ``["transformer.width=96"]``."""
    return [f"{sec}.{k}={json.dumps(v)}" for sec, fields in sections.items() for k, v in fields.items()]


def tiny_checkpoint(path: Path, seed: int = 0, stored: dict[str, dict[str, Any]] | None = None,
                    **overrides: dict[str, Any]) -> Path:
    """Write a complete checkpoint (vqvae, transformer and refiner, as train_refiner leaves it) of a seeded
    tiny model, which `restorevar restore` accepts; returns ``path``.

    ``overrides`` change the model per config section (``transformer={"width": 96}``). ``stored`` changes
    only the config written into the file, so that it disagrees with the weights.
    """
    torch.manual_seed(seed)
    cfg = get_preset("tiny", _dotted(overrides))
    model = RestoreVAR(cfg).eval()
    components = {name: getattr(model, name).state_dict() for name in ("vqvae", "transformer", "refiner")}
    written = apply_overrides(cfg, _dotted(stored)) if stored else cfg
    save_checkpoint(path, config=written, components=components, step=1,
                    meta={"train_config": {}, "extra": {"made_by": "tests/bad_inputs/_fixtures.py"}})
    return path


def small_image(path: Path, size: int = 32, seed: int = 0) -> Path:
    """A seeded RGB noise PNG."""
    rgb = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path
