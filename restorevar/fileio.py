"""Atomic writes and image reading with errors that name the file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from restorevar.errors import UserError


class ImageReadError(UserError):
    """An image that is missing, corrupt or truncated; the message names the file."""


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``; the old file survives any failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; the file gets the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_image(path: str | Path) -> Image.Image:
    """Fully decoded RGB image; a missing, corrupt or truncated file raises ImageReadError naming it."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"image not found: {path}; check the path")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - PIL raises several types for bad files
        raise ImageReadError(f"cannot decode image {path} (corrupt or truncated?): {e}") from None


def write_png(path: str | Path, array_HW3: np.ndarray) -> None:
    """Deterministic PNG bytes (no timestamps), written atomically."""
    img = Image.fromarray(array_HW3)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG", optimize=False, compress_level=6))
