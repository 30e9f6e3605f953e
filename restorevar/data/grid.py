"""An example grid of the synthetic degradations: one row per degradation, clean/degraded pairs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from restorevar.data.degrade import DEGRADATIONS
from restorevar.data.photos import load_photo, photos_for
from restorevar.data.synth import check_seed, random_crop
from restorevar.errors import UserError
from restorevar.fileio import write_png


def example_grid(out: str | Path, size: int = 96, pairs_per_row: int = 3, seed: int = 0) -> Path:
    out = Path(out)
    if not 16 <= size <= 1024:
        raise UserError(f"--size must be between 16 and 1024 pixels, got {size}")
    check_seed(seed)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the path of the PNG file to write")
    photos = [load_photo(p) for p in photos_for("train") + photos_for("test")]
    label_w, pad = 110, 4
    rows = []
    for r, (name, (fn, _, in_train)) in enumerate(DEGRADATIONS.items()):
        tiles = []
        for c in range(pairs_per_row):
            rng = np.random.default_rng([seed, r, c])
            clean, _ = random_crop(photos[(r * pairs_per_row + c) % len(photos)], size, rng, 0.4)
            degraded, _ = fn(clean, rng)
            tiles += [clean, degraded]
        row = np.full((size, label_w + len(tiles) * (size + pad), 3), 255, np.uint8)
        for i, t in enumerate(tiles):
            x = label_w + i * (size + pad)
            row[:, x:x + size] = t
        im = Image.fromarray(row)
        ImageDraw.Draw(im).text((4, size // 2 - 12), f"{name}\n{'train+test' if in_train else 'test only'}",
                                fill=(0, 0, 0))
        rows.append(np.asarray(im))
    header = np.full((16, rows[0].shape[1], 3), 255, np.uint8)
    him = Image.fromarray(header)
    d = ImageDraw.Draw(him)
    for i in range(pairs_per_row * 2):
        d.text((label_w + i * (size + pad) + 4, 2), "clean" if i % 2 == 0 else "degraded", fill=(0, 0, 0))
    grid = np.concatenate([np.asarray(him)] + rows, axis=0)
    try:
        write_png(out, grid)
    except OSError as e:
        raise UserError(f"cannot write {out} ({e.strerror or e}); give a PNG path in a folder you can write to") from None
    return out
