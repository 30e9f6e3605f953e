"""Colour photographs that installed packages ship: the embedded benchmark's only source of scenes.

Nothing is downloaded. Train, validation and test photographs are disjoint *scenes* (the stereo motorcycle pair
counts as one scene and stays in one split), so test scenes are never seen in training. The validation scenes
(four photographs that pyiqa ships with its tests: a night street, a garden, a beach at sunset, a snowy road) are
what the restoration stages choose on: scenes the model never trains on, and never the test split. No pretraining
corpus takes them either (``restorevar.data.corpus`` refuses them as it refuses the test scenes).
"""
from __future__ import annotations

import importlib.metadata
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
    relpath: str  # path inside that package (or, for a distribution, inside the folder it installs into)
    split: str  # "train", "val" or "test"
    # "module": relpath is inside the importable package; "distribution": inside the site-packages folder that the
    # installed distribution of that name writes (pyiqa's test photographs lie in a top-level tests/ folder)
    root: str = "module"


PHOTOS: tuple[Photo, ...] = (
    Photo("astronaut", "skimage", "data/astronaut.png", "train"),
    Photo("chelsea", "skimage", "data/chelsea.png", "train"),
    Photo("motorcycle_left", "skimage", "data/motorcycle_left.png", "train"),
    Photo("motorcycle_right", "skimage", "data/motorcycle_right.png", "train"),
    Photo("rocket", "skimage", "data/rocket.jpg", "train"),
    Photo("china", "sklearn", "datasets/images/china.jpg", "train"),
    Photo("hubble_deep_field", "skimage", "data/hubble_deep_field.jpg", "train"),
    Photo("night_street", "pyiqa", "tests/test_efficiency_img_dir/frame_4wrwr48cdk6rbcjl.jpg", "val", "distribution"),
    Photo("garden", "pyiqa", "tests/test_efficiency_img_dir/frame_7gzdcz9sif0ekg31.jpg", "val", "distribution"),
    Photo("sunset_beach", "pyiqa", "tests/test_efficiency_img_dir/frame_9ogwhvvy7gfj6jzh.jpg", "val", "distribution"),
    Photo("snowy_road", "pyiqa", "tests/test_efficiency_img_dir/SPAQ_10241.jpg", "val", "distribution"),
    Photo("coffee", "skimage", "data/coffee.png", "test"),
    Photo("flower", "sklearn", "datasets/images/flower.jpg", "test"),
    Photo("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "test"),
)


def photo_path(photo: Photo) -> Path:
    missing = UserError(f"photo {photo.name!r} comes with the package {photo.package!r}, which is not installed; "
                        "run `make setup` (or pip install -e .)")
    if photo.root == "distribution":
        try:
            path = Path(str(importlib.metadata.distribution(photo.package).locate_file(photo.relpath)))
        except importlib.metadata.PackageNotFoundError:
            raise missing from None
    else:
        spec = importlib.util.find_spec(photo.package)
        if spec is None or spec.origin is None:
            raise missing
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
