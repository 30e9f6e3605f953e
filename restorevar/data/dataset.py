"""Paired training/test dataset over a manifest, and the degradation-balanced sampler."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from restorevar.data.manifest import CLASS_NAMES, Entry, read_manifest
from restorevar.errors import UserError
from restorevar.fileio import ImageReadError, read_image
from restorevar.imaging import from_uint8


@dataclass
class PairedTransform:
    """The paper's preprocessing as parameters.

    train: resize the shorter side to ``resize_shorter`` (Lanczos; None keeps it), random paired ``crop``,
    optional flips. test: ``test_protocol`` 'resize' (to ``crop`` x ``crop``) or 'center_crop'.
    """

    crop: int = 512
    resize_shorter: int | None = 576
    hflip: bool = False
    vflip: bool = False
    mode: Literal["train", "test"] = "train"
    test_protocol: Literal["resize", "center_crop"] = "resize"

    def protocol(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _resize_shorter(im: Image.Image, shorter: int) -> Image.Image:
    w, h = im.size
    s = shorter / min(w, h)
    return im.resize((max(shorter, round(w * s)), max(shorter, round(h * s))), Image.Resampling.LANCZOS)


class PairedDataset(Dataset):
    """Items: ``degraded``/``clean`` (3 x crop x crop, in [-1, 1]), ``degradation`` (int), ``dataset``, ``id``.

    A corrupt or truncated image raises ImageReadError naming the file. With ``skip_corrupt`` the item is
    returned as None instead (drop it with ``collate_skip_none``) and counted in ``self.skipped``.
    """

    def __init__(self, manifest: str | Path, transform: PairedTransform, seed: int = 0,
                 skip_corrupt: bool = False, require_target: bool = True):
        self.manifest = Path(manifest)
        self.entries: list[Entry] = read_manifest(self.manifest)
        bad = [i for i, e in enumerate(self.entries) if e.degradation not in CLASS_NAMES]
        if bad:
            raise UserError(f"{self.manifest} entry {bad[0]} has unknown degradation {self.entries[bad[0]].degradation!r}; "
                            f"run `restorevar data check {self.manifest}`")
        if require_target and any(e.target_path is None for e in self.entries):
            raise UserError(f"{self.manifest} has entries without target_path; paired training needs clean targets")
        self.t, self.seed, self.skip_corrupt, self.skipped = transform, seed, skip_corrupt, []
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> list[int]:
        return [e.degradation for e in self.entries]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _pair(self, index: int) -> tuple[Image.Image, Image.Image | None]:
        img_path, tgt_path = self.entries[index].resolve(self.manifest.parent)
        deg = read_image(img_path)
        clean = read_image(tgt_path) if tgt_path is not None else None
        if clean is not None and clean.size != deg.size:
            raise ImageReadError(f"{img_path} is {deg.size} but its target {tgt_path} is {clean.size}")
        return deg, clean

    def _apply(self, index: int, deg: Image.Image, clean: Image.Image | None, epoch: int):
        t = self.t
        ims = [deg] if clean is None else [deg, clean]
        if t.mode == "test":
            if t.test_protocol == "resize":
                return [im.resize((t.crop, t.crop), Image.Resampling.LANCZOS) for im in ims]
            w, h = deg.size
            if min(w, h) < t.crop:
                raise ImageReadError(f"{self.entries[index].image_path} ({w}x{h}) is smaller than the {t.crop} crop")
            left, top = (w - t.crop) // 2, (h - t.crop) // 2
            return [im.crop((left, top, left + t.crop, top + t.crop)) for im in ims]
        if t.resize_shorter is not None:
            ims = [_resize_shorter(im, t.resize_shorter) for im in ims]
        rng = np.random.default_rng([self.seed, epoch, index])  # reproducible, worker-independent
        w, h = ims[0].size
        if min(w, h) < t.crop:
            raise ImageReadError(f"{self.entries[index].image_path} ({w}x{h}) is smaller than the {t.crop} crop")
        left, top = int(rng.integers(0, w - t.crop + 1)), int(rng.integers(0, h - t.crop + 1))
        ims = [im.crop((left, top, left + t.crop, top + t.crop)) for im in ims]
        if t.hflip and rng.random() < 0.5:
            ims = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in ims]
        if t.vflip and rng.random() < 0.5:
            ims = [im.transpose(Image.Transpose.FLIP_TOP_BOTTOM) for im in ims]
        return ims

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        return self.item(index, self.epoch)

    def item(self, index: int, epoch: int = 0) -> dict[str, Any] | None:
        """Entry ``index`` with the random crop/flip of ``epoch`` (any int; trainers pass the step)."""
        e = self.entries[index]
        try:
            ims = self._apply(index, *self._pair(index), epoch=epoch)
        except ImageReadError:
            if not self.skip_corrupt:
                raise
            self.skipped.append(e.image_path)
            return None
        item = {"degraded": from_uint8(ims[0]), "degradation": e.degradation, "dataset": e.dataset,
                "id": e.id, "index": index}
        if len(ims) == 2:
            item["clean"] = from_uint8(ims[1])
        return item


def collate_skip_none(batch: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return torch.utils.data.default_collate(batch)


class DegradationBalancedSampler(Sampler[int]):
    """Each draw picks a degradation uniformly, then an entry of it uniformly, with replacement."""

    def __init__(self, labels: list[int], num_samples: int, seed: int = 0):
        self.groups: dict[int, np.ndarray] = {}
        for i, lab in enumerate(labels):
            self.groups.setdefault(lab, []).append(i)  # type: ignore[arg-type]
        self.groups = {k: np.asarray(v) for k, v in sorted(self.groups.items())}
        if not self.groups:
            raise UserError("cannot balance an empty dataset")
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        keys = list(self.groups)
        for g in rng.integers(0, len(keys), self.num_samples):
            members = self.groups[keys[g]]
            yield int(members[rng.integers(0, len(members))])
