"""Colour photographs that installed packages ship: the embedded benchmark's only source of scenes.

Nothing is downloaded. Train and test photographs are disjoint *scenes* (the stereo motorcycle pair
counts as one scene and stays in one split), so test scenes are never seen in training.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from restorevar.errors import UserError


@dataclass(frozen=True)
class Photo:
    name: str
    package: str  # the installed package that ships it
    relpath: str  # path inside that package
    split: str  # "train" or "test"


PHOTOS: tuple[Photo, ...] = (
    Photo("astronaut", "skimage", "data/astronaut.png", "train"),
    Photo("chelsea", "skimage", "data/chelsea.png", "train"),
    Photo("motorcycle_left", "skimage", "data/motorcycle_left.png", "train"),
    Photo("motorcycle_right", "skimage", "data/motorcycle_right.png", "train"),
    Photo("rocket", "skimage", "data/rocket.jpg", "train"),
    Photo("china", "sklearn", "datasets/images/china.jpg", "train"),
    Photo("hubble_deep_field", "skimage", "data/hubble_deep_field.jpg", "train"),
    Photo("coffee", "skimage", "data/coffee.png", "test"),
    Photo("flower", "sklearn", "datasets/images/flower.jpg", "test"),
    Photo("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "test"),
)


def photo_path(photo: Photo) -> Path:
    spec = importlib.util.find_spec(photo.package)
    if spec is None or spec.origin is None:
        raise UserError(f"photo {photo.name!r} comes with the package {photo.package!r}, which is not installed; "
                        "run `make setup` (or pip install -e .)")
    path = Path(spec.origin).parent / photo.relpath
    if not path.exists():
        raise UserError(f"photo {photo.name!r} is missing from the installed {photo.package} ({path})")
    return path


def load_photo(photo: Photo) -> np.ndarray:
    """HxWx3 uint8 RGB."""
    with Image.open(photo_path(photo)) as im:
        return np.asarray(im.convert("RGB"))


def photos_for(split: str) -> list[Photo]:
    return [p for p in PHOTOS if p.split == split]
