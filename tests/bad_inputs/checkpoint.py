"""Checkpoints that are not what they claim: config and weights that disagree, random bytes, pickled objects."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from bad_inputs import Case
from bad_inputs._fixtures import small_image, tiny_checkpoint


def _restore(tmp: Path, ckpt: Path) -> list[str]:
    img = small_image(tmp / "in.png")
    return ["restore", img.name, "--checkpoint", ckpt.name, "--out", "out", "--quiet"]


def _config_says_wider(tmp: Path) -> list[str]:
    return _restore(tmp, tiny_checkpoint(tmp / "bad.pt", stored={"transformer": {"width": 96}}))


def _config_says_deeper_refiner(tmp: Path) -> list[str]:
    return _restore(tmp, tiny_checkpoint(tmp / "bad.pt", stored={"refiner": {"depth": 3}}))


def _random_bytes(tmp: Path) -> list[str]:
    (tmp / "bad.pt").write_bytes(os.urandom(4096))
    return _restore(tmp, tmp / "bad.pt")


def _truncated(tmp: Path) -> list[str]:
    whole = tiny_checkpoint(tmp / "bad.pt").read_bytes()
    (tmp / "bad.pt").write_bytes(whole[: len(whole) // 2])
    return _restore(tmp, tmp / "bad.pt")


class Payload:
    """Any class instance: unpickling it would run code chosen by whoever wrote the file."""

    def __init__(self):
        self.note = "not weights"


def _pickled_object(tmp: Path) -> list[str]:
    torch.save({"format": "restorevar-checkpoint", "version": 1, "payload": Payload()}, tmp / "bad.pt")
    return _restore(tmp, tmp / "bad.pt")


CASES = [
    Case("checkpoint-config-width-disagrees-with-weights", _config_says_wider,
         "the transformer weight word_embed.weight has shape (64, 8), its config needs (96, 8); "
         "the checkpoint's config and weights disagree"),
    Case("checkpoint-config-depth-disagrees-with-weights", _config_says_deeper_refiner,
         "the refiner weights lack layers.2."),
    Case("checkpoint-random-bytes", _random_bytes, "cannot read checkpoint bad.pt (corrupt or truncated?)"),
    Case("checkpoint-truncated", _truncated, "cannot read checkpoint bad.pt (corrupt or truncated?)"),
    Case("checkpoint-pickled-object", _pickled_object, "checkpoint bad.pt is not a plain weights file"),
]
