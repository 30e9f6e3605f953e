"""Training pairs synthesised on the fly: a fresh crop and degradation for every image of every step.

A fixed set of pairs (the benchmark's 320) is memorised long before the model learns the task; drawing
each pair anew from whole photographs gives every step new scenes, framings and degradation parameters.
Pair i of step s depends only on (seed, s, i), so a resumed run sees exactly the batches it would have
seen, and validation pairs come from their own stream (or from scenes held out of training).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from restorevar.data.degrade import DEGRADATIONS
from restorevar.data.photos import load_photo, photos_for
from restorevar.data.synth import degradations_for, random_crop
from restorevar.errors import UserError
from restorevar.imaging import from_uint8

TRAIN_DEGRADATIONS = tuple(degradations_for("train"))
_VAL_STREAM = 2**31 - 1  # a step number no training run reaches: validation pairs never repeat a batch


@dataclass(frozen=True)
class Scene:
    name: str
    pixels: np.ndarray  # HxWx3 uint8


def load_scenes(photos: str) -> list[Scene]:
    """``shipped``: the benchmark's training photographs; ``unseen``: the shipped validation scenes (never trained
    on); otherwise the path of a corpus.json."""
    if photos in ("shipped", "unseen"):
        return [Scene(p.name, load_photo(p)) for p in photos_for("train" if photos == "shipped" else "val")]
    from restorevar.data.corpus import corpus_arrays, load_corpus

    entries = load_corpus(photos)
    return [Scene(e["scene"], a) for e, a in zip(entries, corpus_arrays(photos))]


def split_scenes(scenes: list[Scene], n_val: int, seed: int) -> tuple[list[Scene], list[Scene]]:
    """Hold ``n_val`` whole scenes out of training (seeded), so validation shows unseen scenes. Images that
    share a scene name (a stereo pair, a wallpaper's light and dark versions) stay on one side."""
    names = sorted({s.name for s in scenes})
    if n_val < 0 or (n_val > 0 and n_val >= len(names)):
        raise UserError(f"val_scenes={n_val} must leave at least one of the {len(names)} scenes for training")
    order = np.random.default_rng([seed, 54321]).permutation(len(names))
    val = {names[int(i)] for i in order[:n_val]}
    return [s for s in scenes if s.name not in val], [s for s in scenes if s.name in val]


def recolour(clean_HW3: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The scene in other colours: its channels in a random order, each scaled by a gain in [0.75, 1.25]. A model
    trained on a handful of photographs otherwise learns their palette (grass is this green) and paints it on every
    image; recoloured, the only colour rule left to learn is the degradation's."""
    gains_3 = rng.uniform(0.75, 1.25, size=3)
    out = clean_HW3[..., rng.permutation(3)].astype(np.float32) * gains_3
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class SynthPairs:
    """Batches of (clean, degraded) crops drawn afresh per step; the same interface as ``StepBatches``.
    ``recolour``: each clean crop recoloured (``recolour``) before it is degraded, from a stream of its own, so the
    crops and degradations are those of the run without it."""

    def __init__(self, scenes: list[Scene], crop: int, batch_size: int, seed: int, *, min_crop_fraction: float = 0.4,
                 degradations: tuple[str, ...] = TRAIN_DEGRADATIONS, recolour: bool = False):
        if not scenes:
            raise UserError("no photographs to draw training pairs from")
        small = [s.name for s in scenes if min(s.pixels.shape[:2]) < crop]
        if small:
            raise UserError(f"photo {small[0]!r} is smaller than the {crop} px crop; lower data.crop")
        unknown = [d for d in degradations if d not in DEGRADATIONS]
        if unknown:
            raise UserError(f"unknown degradation {unknown[0]!r}; choose from {', '.join(DEGRADATIONS)}")
        self.scenes, self.crop, self.batch_size, self.seed = scenes, crop, batch_size, seed
        self.min_crop_fraction, self.degradations, self.recolour = min_crop_fraction, degradations, recolour
        self.part = slice(None)  # the positions of each batch this process builds (its rank's share)

    def item(self, step: int, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, step, i])
        scene = self.scenes[int(rng.integers(0, len(self.scenes)))]
        clean, _ = random_crop(scene.pixels, self.crop, rng, self.min_crop_fraction)
        if self.recolour:
            clean = recolour(clean, np.random.default_rng([self.seed, step, i, 8191]))
        name = self.degradations[int(rng.integers(0, len(self.degradations)))]
        fn, cls, _ = DEGRADATIONS[name]
        degraded, _ = fn(clean, rng)
        return {"degraded": from_uint8(degraded), "clean": from_uint8(clean), "degradation": cls,
                "dataset": f"onthefly-{name}", "id": f"{scene.name}:{step}:{i}", "index": i}

    def _stack(self, items: list[dict[str, Any]], device) -> dict[str, Any]:
        return {k: (torch.stack([it[k] for it in items]).to(device) if isinstance(items[0][k], torch.Tensor)
                    else [it[k] for it in items]) for k in items[0]}

    def batch(self, step: int, device) -> dict[str, Any]:
        return self._stack([self.item(step, i) for i in range(self.batch_size)[self.part]], device)

    def fixed_batches(self, n_batches: int, device) -> list[dict[str, Any]]:
        """Validation batches: the same pairs at every evaluation, from a stream training never draws."""
        return [self._stack([self.item(_VAL_STREAM, b * self.batch_size + i) for i in range(self.batch_size)], device)
                for b in range(n_batches)]
