"""Self-describing checkpoints: weights, optimizer, step, RNG state and the resolved config.

Files are written atomically (temp file + rename) so an interrupted save never clobbers the last
good checkpoint, and read with ``torch.load(weights_only=True)``: checkpoints are untrusted input
and must never unpickle arbitrary objects.
"""
from __future__ import annotations

import pickle
import random
import types
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


def seed_rngs(seed: int) -> None:
    """Seed every RNG a checkpoint saves (Python's, NumPy's global and torch's), not torch's alone: an unseeded
    one starts from OS entropy, and the checkpoint would then carry a state that differs from run to run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    atomic_write(path, lambda tmp: _save_bytes(payload, tmp))


class _NoMemoPickler(pickle.Pickler):
    """A pickler without its memo. With it, a string met twice is written once, then referred to, but only if
    both are the same object: a config read back from a checkpoint (a resumed run) holds other objects than
    one built in the process, so equal contents were written as different bytes."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fast = True  # no memo; a checkpoint's payload holds no cycles


_PICKLE = types.SimpleNamespace(__name__="restorevar.checkpoint._PICKLE", Pickler=_NoMemoPickler)


def _save_bytes(payload: dict[str, Any], tmp: str) -> None:
    # Equal contents, equal bytes: a stage that retrains (or resumes) to the same weights then leaves DVC
    # nothing to rerun downstream. Through a file object, not the path: given a path, torch names the archive's
    # folder after the file, and the temp file's name is random.
    with open(tmp, "wb") as f:
        torch.save(payload, f, pickle_module=_PICKLE)


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
        text = str(e).strip()
        # weights_only refuses to unpickle a class instance (or a function): the file is readable, so it is
        # not corrupt, only unsafe; say so rather than suggest it is damaged.
        if "Unsupported global" in text:
            raise UserError(
                f"{what} {path} is not a plain weights file: it holds pickled Python objects, which are refused "
                "for safety; re-save it as a plain state_dict of tensors"
            ) from None
        msg = text.splitlines()[0].split(". ")[0] if text else type(e).__name__  # torch's advice runs on
        if msg.startswith("Weights only load failed"):
            msg = "not readable as tensor data"
        raise UserError(f"cannot read {what} {path} (corrupt or truncated?): {msg}; copy or export it again") from None


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


def stored_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's config dict, with keys added since it was written filled in as it was trained.

    Fields added later get a default that suits new runs, which is not always what an older checkpoint
    was trained with; rebuilding an old checkpoint's model with that default would change its function.
    """
    cfg = ckpt.get("config")
    if not isinstance(cfg, dict):
        raise UserError("the checkpoint holds no config; re-export it with this version of RestoreVAR")
    t = cfg.get("transformer")
    if isinstance(t, dict) and "cross_norm_eps" not in t:
        from restorevar.models.transformer import TransformerConfig

        # before cross_norm_eps existed, the cross-attention LayerNorms used norm_eps
        cfg = {**cfg, "transformer": {**t, "cross_norm_eps": t.get("norm_eps", TransformerConfig.norm_eps)}}
        t = cfg["transformer"]
    if isinstance(t, dict) and "condition_inject" not in t:  # before it existed, every model was the paper's
        cfg = {**cfg, "transformer": {**t, "condition_inject": "none"}}
    return cfg


def check_weights(module: torch.nn.Module, sd: Any, name: str, path: str | Path) -> None:
    """Refuse weights that do not fit ``module``, naming the first key that differs.

    The config check above cannot catch a file whose stored config and weights disagree (a hand-edited
    or mislabelled export); ``load_state_dict`` would then fail with a multi-line size-mismatch report.
    """
    fix = "the checkpoint's config and weights disagree; re-export it with the config its weights were made for"
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"checkpoint {path}: the {name} weights are not a dict of tensors; {fix}")
    expected = module.state_dict()
    for key, want in expected.items():
        if key not in sd:
            raise UserError(f"checkpoint {path}: the {name} weights lack {key}; {fix}")
        if tuple(sd[key].shape) != tuple(want.shape):
            raise UserError(f"checkpoint {path}: the {name} weight {key} has shape {tuple(sd[key].shape)}, "
                            f"its config needs {tuple(want.shape)}; {fix}")
    extra = sorted(set(sd) - set(expected))
    if extra:
        raise UserError(f"checkpoint {path}: the {name} weights hold {extra[0]}, which its config has no place for"
                        f" ({len(extra)} such keys); {fix}")


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
            ours, theirs = to_dict(cfg), stored_config(ckpt)
            diffs = []
            for section in _DEPENDS.get(name, [name]):
                a, b = _arch(theirs.get(section)), _arch(ours.get(section))
                if any_resolution and section == "vqvae":
                    a, b = ({k: v for k, v in d.items() if k not in RESOLUTION_KEYS} for d in (a, b))
                diffs += config_diff(a, b, f"{section}.")
            if diffs:
                raise UserError(
                    f"checkpoint {path} was made for another config ({diffs[0]}); "
                    "use the preset/overrides it was trained with"
                )
            src, dst = tuple(theirs["vqvae"]["patch_nums"]), tuple(ours["vqvae"]["patch_nums"])
            if any_resolution and src != dst:
                if name == "vqvae":
                    sd = resize_vqvae_state(sd, src, dst)
                elif name == "transformer":
                    sd = resize_transformer_state(sd, src, dst, ours["transformer"]["conditioning"])
                else:
                    raise UserError(f"checkpoint {path}: the {name} cannot be carried to another image size")
        module = getattr(model, name)
        check_weights(module, sd, name, path)
        module.load_state_dict(sd, strict=True)


def config_from_checkpoint(ckpt: dict[str, Any]):
    from restorevar.models.restorevar import RestoreVARConfig

    return from_dict(RestoreVARConfig, stored_config(ckpt))


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
