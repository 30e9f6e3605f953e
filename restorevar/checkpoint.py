"""Self-describing checkpoints: weights, optimizer, step, RNG state and the resolved config.

Files are written atomically (temp file + rename) so an interrupted save never clobbers the last
good checkpoint, and read with ``torch.load(weights_only=True)``: checkpoints are untrusted input
and must never unpickle arbitrary objects.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from restorevar.config import from_dict, to_dict
from restorevar.errors import UserError
from restorevar.fileio import atomic_write

FORMAT = "restorevar-checkpoint"
VERSION = 1


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | Path,
    *,
    config: Any,
    components: dict[str, dict[str, torch.Tensor]],
    step: int = 0,
    optimizer: dict[str, Any] | None = None,
    scheduler: dict[str, Any] | None = None,
    rng: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": to_dict(config),
        "components": components,
        "step": step,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "rng": rng,
        "meta": meta or {},
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load`` with weights_only=True and one-line errors for the usual failures."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}; check the path")
    if path.is_dir():
        raise UserError(f"{what} path {path} is a directory; give the file inside it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if msg.startswith("Weights only load failed"):
            msg = "not readable as tensor data"
        if "Unsupported global" in str(e):  # a pickled class instance: refuse, never unpickle it
            raise UserError(
                f"{what} {path} holds pickled Python objects, which are refused for safety; "
                "re-save it as a plain state_dict of tensors"
            ) from None
        raise UserError(f"cannot read {what} {path} (corrupt or truncated?): {msg}") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    ckpt = read_torch_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(
            f"{path} is not a RestoreVAR checkpoint; convert published weights with `restorevar convert-official`"
        )
    if ckpt.get("version", 0) > VERSION:
        raise UserError(f"{path} was written by a newer RestoreVAR (format v{ckpt['version']}); upgrade the package")
    return ckpt


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += config_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: checkpoint {a!r} vs requested {b!r}"]


# Sections whose architecture a component depends on, and keys that only affect training/sampling.
_DEPENDS = {"vqvae": ["vqvae"], "transformer": ["transformer", "vqvae"], "refiner": ["refiner", "transformer", "vqvae"]}
_NON_ARCH = {"drop_path_rate", "dropout", "beta", "hart_sample_steps"}


def _arch(section: Any) -> Any:
    return {k: v for k, v in section.items() if k not in _NON_ARCH} if isinstance(section, dict) else section


def load_components(model: torch.nn.Module, ckpt: dict[str, Any], names: list[str], path: str | Path = "",
                    any_resolution: bool = False) -> None:
    """Load the named components strictly, after checking the architecture-defining config matches.

    ``any_resolution`` also accepts weights made for another image size (``vqvae.image_size`` and
    ``vqvae.patch_nums``), rewriting the per-scale tensors for this model's scales (models/resize.py).
    """
    from restorevar.models.resize import RESOLUTION_KEYS, resize_transformer_state, resize_vqvae_state

    cfg = getattr(model, "cfg", None)
    for name in names:
        if name not in ckpt["components"]:
            have = ", ".join(ckpt["components"]) or "none"
            raise UserError(f"checkpoint {path} has no '{name}' weights (it holds: {have})")
        sd = ckpt["components"][name]
        if cfg is not None:
            ours = to_dict(cfg)
            diffs = []
            for section in _DEPENDS.get(name, [name]):
                a, b = _arch(ckpt["config"].get(section)), _arch(ours.get(section))
                if any_resolution and section == "vqvae":
                    a, b = ({k: v for k, v in d.items() if k not in RESOLUTION_KEYS} for d in (a, b))
                diffs += config_diff(a, b, f"{section}.")
            if diffs:
                raise UserError(
                    f"checkpoint {path} was made for another config ({diffs[0]}); "
                    "use the preset/overrides it was trained with"
                )
            src, dst = tuple(ckpt["config"]["vqvae"]["patch_nums"]), tuple(ours["vqvae"]["patch_nums"])
            if any_resolution and src != dst:
                if name == "vqvae":
                    sd = resize_vqvae_state(sd, src, dst)
                elif name == "transformer":
                    sd = resize_transformer_state(sd, src, dst, ours["transformer"]["conditioning"])
                else:
                    raise UserError(f"checkpoint {path}: the {name} cannot be carried to another image size")
        module = getattr(model, name)
        module.load_state_dict(sd, strict=True)


def config_from_checkpoint(ckpt: dict[str, Any]):
    from restorevar.models.restorevar import RestoreVARConfig

    return from_dict(RestoreVARConfig, ckpt["config"])


def load_model(path: str | Path, components: list[str], refiner_none: bool = False):
    """A RestoreVAR built from a checkpoint's own config with the named components loaded (eval mode).

    ``refiner_none`` swaps in the identity refiner, to decode a transformer's tokens without the refiner
    it was never paired with.
    """
    import dataclasses

    from restorevar.models.restorevar import RestoreVAR

    ck = load_checkpoint(path)
    cfg = config_from_checkpoint(ck)
    if refiner_none:
        cfg.refiner = dataclasses.replace(cfg.refiner, kind="none")
    model = RestoreVAR(cfg)
    load_components(model, ck, components, path)
    return model.eval()
