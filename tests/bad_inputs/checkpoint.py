"""Checkpoints that are not what they claim: config and weights that disagree, random bytes, pickled objects;
a config that describes a model far larger than the file, fields of the wrong type, weights that are NaN, infinite
or integers. Each is refused before any model is built, by `restorevar restore` and `restorevar bench` alike.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def _bench(tmp: Path, ckpt: Path) -> list[str]:
    # the least work a benchmark can do, so that one which loads the file does not run out the time limit
    return ["bench", "--checkpoint", ckpt.name, "--device", "cpu", "--no-train", "--warmup", "0", "--repeats", "1",
            "--agreement-images", "1"]


def _edited(edit: Callable[[dict[str, Any]], None], command: Callable[[Path, Path], list[str]]):
    """A setup: the tiny checkpoint, as ``torch.load`` reads it, changed by ``edit`` and written back with
    ``torch.save`` (not through the typed config, which would refuse most of these edits)."""
    def setup(tmp: Path) -> list[str]:
        path = tiny_checkpoint(tmp / "bad.pt")
        ckpt = torch.load(path, weights_only=True)
        edit(ckpt)
        torch.save(ckpt, path)
        return command(tmp, path)
    return setup


def _set(section: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda ck: ck["config"][section].__setitem__(key, value)


def _top(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda ck: ck.__setitem__(key, value)


def _fill(component: str, key: str, value: float) -> Callable[[dict[str, Any]], None]:
    return lambda ck: ck["components"][component][key].fill_(value)


def _as_integers(ck: dict[str, Any]) -> None:
    for sd in ck["components"].values():
        for k, v in sd.items():
            sd[k] = v.round().long()


def _big_but_bounded(ck: dict[str, Any]) -> None:
    # every field in range, the model some 160 GB: only the weights' shapes give the file away
    ck["config"]["transformer"].update(depth=64, width=4096, heads=64, mlp_ratio=16.0)


def _discriminator(change: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[dict[str, Any]], None]:
    """Add the decoder's discriminator weights (restore and bench never load them), changed by ``change``."""
    from restorevar.models import PatchGAN, get_preset

    def edit(ck: dict[str, Any]) -> None:
        sd = PatchGAN(get_preset("tiny").discriminator).state_dict()
        change(sd)
        ck["components"]["discriminator"] = sd
    return edit


def _reshape(sd: dict[str, torch.Tensor]) -> None:
    sd["net.0.weight"] = sd["net.0.weight"].flatten()


def _non_name_key(ck: dict[str, Any]) -> None:
    # beside a named extra one: sorting the extra keys to name the first met an int and a str
    ck["components"]["transformer"].update({7: torch.zeros(3), "extra.weight": torch.zeros(3)})


_FIX = "the checkpoint's config and weights disagree"
# (slug, edit, fragment): each is run through both commands that build a model from a checkpoint
_EDITS = [
    ("huge-vocab", _set("vqvae", "vocab_size", 2**31),
     "checkpoint bad.pt: vqvae.vocab_size must be between 2 and 65536, got 2147483648"),
    ("huge-depth", _set("transformer", "depth", 100_000),
     "checkpoint bad.pt: transformer.depth must be between 1 and 64, got 100000"),
    ("big-config-small-weights", _big_but_bounded,
     "checkpoint bad.pt: the transformer weight word_embed.weight has shape (64, 8), its config needs (4096, 8)"),
    ("version-string", _top("version", "1"), "checkpoint bad.pt: 'version' must be an integer format version, got str"),
    ("components-int", _top("components", 7),
     "checkpoint bad.pt: 'components' must be a mapping of component names to weights, got int"),
    ("components-list", _top("components", ["vqvae", "transformer", "refiner"]),
     "checkpoint bad.pt: 'components' must be a mapping of component names to weights, got list"),
    ("nan-weights", _fill("transformer", "blocks.0.ffn.fc1.weight", float("nan")),
     "checkpoint bad.pt: the transformer weight blocks.0.ffn.fc1.weight holds NaN"),
    ("inf-weights", _fill("vqvae", "decoder.conv_out.weight", -float("inf")),
     "checkpoint bad.pt: the vqvae weight decoder.conv_out.weight holds infinite values"),
    ("integer-weights", _as_integers,
     "checkpoint bad.pt: the vqvae weight encoder.conv_in.weight is int64, not float32, float16 or bfloat16"),
    ("wrong-shape", _discriminator(_reshape),
     f"checkpoint bad.pt: the discriminator weight net.0.weight has shape (384,), its config needs (8, 3, 4, 4); {_FIX}"),
    ("missing-tensor", _discriminator(lambda sd: sd.pop("net.3.running_var")),
     f"checkpoint bad.pt: the discriminator weights lack net.3.running_var; {_FIX}"),
    ("extra-tensor", _discriminator(lambda sd: sd.__setitem__("net.99.weight", torch.zeros(4))),
     "checkpoint bad.pt: the discriminator weights hold net.99.weight, which its config has no place for"),
    ("extra-tensor-not-named", _non_name_key,
     "checkpoint bad.pt: the transformer weights are not a mapping of names to tensors"),
]

CASES = [
    Case("checkpoint-config-width-disagrees-with-weights", _config_says_wider,
         "the transformer weight word_embed.weight has shape (64, 8), its config needs (96, 8); "
         "the checkpoint's config and weights disagree"),
    Case("checkpoint-config-depth-disagrees-with-weights", _config_says_deeper_refiner,
         "the refiner weights lack layers.2."),
    Case("checkpoint-random-bytes", _random_bytes, "cannot read checkpoint bad.pt (corrupt or truncated?)"),
    Case("checkpoint-truncated", _truncated, "cannot read checkpoint bad.pt (corrupt or truncated?)"),
    Case("checkpoint-pickled-object", _pickled_object, "checkpoint bad.pt is not a plain weights file"),
] + [
    Case(f"checkpoint-{name}-{slug}", _edited(edit, command), fragment, timeout_s=60)
    for name, command in (("restore", _restore), ("bench", _bench)) for slug, edit, fragment in _EDITS
]
