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
    kind = _model_of(config)
    if kind != "restorevar":  # RestoreVAR's files name no model (they did not before baselines), so stay as they were
        payload["model"] = kind
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
    """A checkpoint whose contents have been checked (``check_checkpoint``): safe to build a model from."""
    ckpt = read_torch_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(
            f"{path} is not a RestoreVAR checkpoint; convert published weights with `restorevar convert-official`"
        )
    check_checkpoint(ckpt, path)
    return ckpt


# What a checkpoint's components may be called: the parts of RestoreVAR, and the decoder's discriminator.
COMPONENTS = ("vqvae", "transformer", "refiner", "discriminator")
# The models a checkpoint may describe, and each one's components: RestoreVAR (a file without a "model" key) and
# the baselines the study retrains.
MODELS = {"restorevar": COMPONENTS, "promptir": ("promptir",)}
# Weights are copied into float32 parameters, which hold every value of these types exactly.
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The most elements (parameters and buffers) a checkpoint's config may describe, about 2.6x the paper's model
# (411M). A checkpoint need not hold every component (a tokenizer's holds the VQ-VAE alone), yet the whole model
# is built from its config; this bounds what a small file can make a loader allocate.
MAX_MODEL_ELEMENTS = 2**30
_DAMAGED = "the file is damaged or was edited; use a checkpoint as RestoreVAR wrote it"
# Far past any config (sections hold fields, a field at most a list of numbers), small enough to read in a message.
_MAX_NESTING, _MAX_ITEMS, _MAX_TEXT = 4, 256, 256


def _kind(value: Any) -> str:
    return type(value).__name__


def check_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint whose description is not one RestoreVAR could have written, before anything is built.

    ``weights_only`` keeps a file from running code, not from describing a model of a billion layers, a
    vocabulary that needs 137 GB, or weights that are NaN: the fields are typed and bounded (the typed config
    and its ``validate``), the model the config describes is built on the meta device (no memory) and every
    stored tensor must have its name, shape and a float type of that model's, and hold only finite values.
    """
    version = ckpt.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise UserError(f"checkpoint {path}: 'version' must be an integer format version, got {_kind(version)}; "
                        f"{_DAMAGED}")
    if version > VERSION:
        raise UserError(f"{path} was written by a newer RestoreVAR (format v{version}); upgrade the package")
    if version < 1:
        raise UserError(f"checkpoint {path}: 'version' must be between 1 and {VERSION}, got {version}; {_DAMAGED}")
    step = ckpt.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 2**63:
        shown = step if isinstance(step, int) and not isinstance(step, bool) and abs(step) < 2**63 else _kind(step)
        raise UserError(f"checkpoint {path}: 'step' must be a non-negative integer, got {shown}; {_DAMAGED}")
    for key in ("meta", "optimizer", "scheduler", "rng"):
        if not isinstance(ckpt.get(key), (dict, type(None))):
            raise UserError(f"checkpoint {path}: '{key}' must be a mapping, got {_kind(ckpt[key])}; {_DAMAGED}")
    kind = ckpt.get("model", "restorevar")
    if not isinstance(kind, str) or kind not in MODELS:
        raise UserError(f"checkpoint {path}: 'model' must be one of {', '.join(MODELS)}, got "
                        f"{repr(kind)[:80] if isinstance(kind, str) else _kind(kind)}; {_DAMAGED}")
    comps = ckpt.get("components")
    if not isinstance(comps, dict):
        raise UserError(f"checkpoint {path}: 'components' must be a mapping of component names to weights, "
                        f"got {_kind(comps)}; {_DAMAGED}")
    for name, sd in comps.items():
        if name not in MODELS[kind]:
            shown = repr(name) if isinstance(name, str) else f"a key of type {_kind(name)}"
            raise UserError(f"checkpoint {path}: 'components' holds {shown[:80]}, which is none of "
                            f"{', '.join(MODELS[kind])}; {_DAMAGED}")
        if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in sd.items()):
            raise UserError(f"checkpoint {path}: the {name} weights are not a mapping of names to tensors; "
                            f"{_DAMAGED}")
    stored = ckpt.get("config")
    if not isinstance(stored, dict):
        raise UserError(f"checkpoint {path}: 'config' must be a mapping of config sections, got {_kind(stored)}; "
                        f"{_DAMAGED}")
    _check_plain(stored, "config", path)
    try:
        cfg = model_config(ckpt)
    except UserError as e:
        raise UserError(f"checkpoint {path}: {e}; {_DAMAGED}") from None
    expected = _meta_model(cfg, "discriminator" in comps)
    for name, sd in comps.items():
        _check_tensors(expected[name], sd, name, path)
    total = sum(t.numel() for m in expected.values() for t in (*m.parameters(), *m.buffers()))
    if total > MAX_MODEL_ELEMENTS:
        raise UserError(f"checkpoint {path}: its config describes a model of {total:,} values (weights and "
                        f"buffers), more than the {MAX_MODEL_ELEMENTS:,} a checkpoint may describe; {_DAMAGED}")


def _check_plain(value: Any, where: str, path: str | Path, depth: int = 0) -> None:
    """Refuse what no config field takes before the typed parser sees it: values other than plain data, keys
    that are not names, integers past 64 bits (Python will not even print one of 4300 digits), and strings,
    lists or nesting far larger than any config has."""
    if depth > _MAX_NESTING:
        raise UserError(f"checkpoint {path}: {where} is nested deeper than any config; {_DAMAGED}")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or len(k) > _MAX_TEXT:
                raise UserError(f"checkpoint {path}: {where} holds a key that is not a field name "
                                f"({_kind(k)}); {_DAMAGED}")
            _check_plain(v, f"{where}.{k}", path, depth + 1)
    elif isinstance(value, (list, tuple)):
        if len(value) > _MAX_ITEMS:
            raise UserError(f"checkpoint {path}: {where} holds {len(value)} items, more than any config field "
                            f"takes; {_DAMAGED}")
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]", path, depth + 1)
    elif isinstance(value, str):
        if len(value) > _MAX_TEXT:
            raise UserError(f"checkpoint {path}: {where} is a string of {len(value)} characters, longer than any "
                            f"config value; {_DAMAGED}")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**63:
            raise UserError(f"checkpoint {path}: {where} is an integer beyond 64 bits; {_DAMAGED}")
    elif not isinstance(value, (bool, float, type(None))):
        raise UserError(f"checkpoint {path}: {where} holds a {_kind(value)}, which no config field takes; {_DAMAGED}")


def _meta_model(cfg: Any, discriminator: bool) -> dict[str, torch.nn.Module]:
    """The components ``cfg`` describes, built on the meta device: shapes and dtypes without memory.

    The config's bounds keep this fast too: the largest model they allow takes a tenth of a second (the first
    meta build in a process also imports more of torch, about a second and 200 MB).
    """
    from restorevar.models import PatchGAN, RestoreVAR

    if _model_of(cfg) == "promptir":
        from restorevar.baselines.promptir import PromptIR

        with torch.device("meta"):
            return {"promptir": PromptIR(cfg)}
    with torch.device("meta"):
        model = RestoreVAR(cfg)
        parts = {name: getattr(model, name) for name in ("vqvae", "transformer", "refiner")}
        if discriminator:  # not part of RestoreVAR; built only when the file holds its weights
            parts["discriminator"] = PatchGAN(cfg.discriminator)
    return parts


def _check_tensors(module: torch.nn.Module, sd: dict[str, torch.Tensor], name: str, path: str | Path) -> None:
    """Names and shapes as ``check_weights``; then each tensor a plain CPU tensor of a float type (or, for a
    buffer the model keeps as integers, its type), holding only finite values."""
    check_weights(module, sd, name, path)
    for key, want in module.state_dict().items():
        got = sd[key]
        if got.layout != torch.strided or got.device.type != "cpu" or got.is_quantized:
            raise UserError(f"checkpoint {path}: the {name} weight {key} is not a plain dense tensor; {_DAMAGED}")
        if want.is_floating_point():
            if got.dtype not in WEIGHT_DTYPES:
                raise UserError(f"checkpoint {path}: the {name} weight {key} is {str(got.dtype).removeprefix('torch.')}"
                                ", not float32, float16 or bfloat16; " + _DAMAGED)
        elif got.dtype != want.dtype:
            raise UserError(f"checkpoint {path}: the {name} weight {key} is {str(got.dtype).removeprefix('torch.')}, "
                            f"its model keeps it as {str(want.dtype).removeprefix('torch.')}; {_DAMAGED}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            what = "NaN" if bool(torch.isnan(got).any()) else "infinite values"
            raise UserError(f"checkpoint {path}: the {name} weight {key} holds {what}; {_DAMAGED}")


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
        t = cfg["transformer"]
    if isinstance(t, dict) and "shift_reads_stream" not in t:  # before it existed, every shift read the stream
        cfg = {**cfg, "transformer": {**t, "shift_reads_stream": True}}
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


def _model_of(config: Any) -> str:
    """Which of ``MODELS`` a config describes."""
    from restorevar.baselines.promptir import PromptIRConfig

    return "promptir" if isinstance(config, PromptIRConfig) else "restorevar"


def model_config(ckpt: dict[str, Any]):
    """The typed config of whichever model the checkpoint describes."""
    if ckpt.get("model", "restorevar") == "promptir":
        from restorevar.baselines.promptir import PromptIRConfig

        return from_dict(PromptIRConfig, ckpt["config"])
    return config_from_checkpoint(ckpt)


def config_from_checkpoint(ckpt: dict[str, Any]):
    """The RestoreVAR config of a checkpoint; a baseline's checkpoint is refused by name."""
    from restorevar.models.restorevar import RestoreVARConfig

    kind = ckpt.get("model", "restorevar")
    if kind != "restorevar":
        raise UserError(f"the checkpoint holds a {kind} model, not RestoreVAR; give a RestoreVAR checkpoint (a "
                        f"{kind} checkpoint is evaluated as the `{kind}` method)")
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
        cfg.refiner = dataclasses.replace(cfg.refiner, kind="none", residual="full")  # none has no residual
    model = RestoreVAR(cfg)
    load_components(model, ck, components, path)
    return model.eval()
