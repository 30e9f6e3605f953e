"""Weights that metrics and initialisation need, where they live in the cache, and which are present.

The cache folder plays the role of ``TORCH_HOME``: pyiqa (0.1.16) keeps its files in
``$TORCH_HOME/hub/pyiqa``, CLIP in ``$TORCH_HOME/hub/clip``, torchvision in ``$TORCH_HOME/hub/checkpoints``.
Point ``TORCH_HOME`` (and ``HF_HOME``) at the cache and those libraries find the files without a network.

A weight file is Python pickle data, and unpickling runs whatever code the file names. So a file is loaded
only by ``load_verified``: its bytes must match a full published SHA-256 and are then read with
``torch.load(weights_only=True)``; a library's own loader (torchvision, lpips and pyiqa all unpickle with
``weights_only=False``) never sees a file from the cache.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restorevar.data.fetch import DownloadError, download, sha256_of
from restorevar.errors import UserError

PYIQA = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"


@dataclass(frozen=True)
class WeightSpec:
    name: str
    relpath: str  # under the cache (= TORCH_HOME)
    url: str
    sha256: str | None = None  # full digest where published
    sha256_prefix: str | None = None  # a file name's hash prefix: enough to spot a stale file, never to load one
    size: int | None = None
    needed_by: tuple[str, ...] = ()
    required: bool = True


WEIGHTS: tuple[WeightSpec, ...] = (
    # torchvision's file name carries only the first 8 hex digits; the full digest and size are those of the
    # file download.pytorch.org serves, as pinned independently by several public projects.
    WeightSpec("alexnet", "hub/checkpoints/alexnet-owt-7be5be79.pth",
               "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
               sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02", size=244408911,
               needed_by=("lpips",)),
    # the same bytes as weights/v0.1/alex.pth shipped in the lpips 0.1.4 wheel
    WeightSpec("lpips_alex", "hub/pyiqa/LPIPS_v0.1_alex-df73285e.pth", PYIQA + "LPIPS_v0.1_alex-df73285e.pth",
               sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0", size=6009,
               needed_by=("lpips",)),
    WeightSpec("musiq_koniq", "hub/pyiqa/musiq_koniq_ckpt-e95806b9.pth", PYIQA + "musiq_koniq_ckpt-e95806b9.pth",
               sha256="e95806b9eae5f3814c410f574ba8e552362bd5bc63d758ed5b97860f5d6185aa", size=108610983,
               needed_by=("musiq",)),
    WeightSpec("clip_rn50", "hub/clip/RN50.pt",
               "https://openaipublic.azureedge.net/clip/models/"
               "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
               sha256="afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", needed_by=("clipiqa",)),
    WeightSpec("var_vae", "var/vae_ch160v4096z32.pth",
               "https://huggingface.co/FoundationVision/var/resolve/main/vae_ch160v4096z32.pth",
               sha256="7c3ec27ae28a3f87055e83211ea8cc8558bd1985d7b51742d074fb4c2fcf186c", size=436075834,
               needed_by=("init_vqvae",)),
    WeightSpec("var_d16", "var/var_d16.pth", "https://huggingface.co/FoundationVision/var/resolve/main/var_d16.pth",
               sha256="4f6151aad91c94e03e224dd7358d8389fa05301c0c291279566998efb54b0ecb", size=1243116346,
               needed_by=("init_transformer",)),
)
BY_NAME = {w.name: w for w in WEIGHTS}


def verify(spec: WeightSpec, path: Path) -> str | None:
    """None if ``path`` is the expected file, else why not."""
    if not path.exists():
        return "missing"
    if spec.size is not None and path.stat().st_size != spec.size:
        return f"size {path.stat().st_size} != {spec.size}"
    if spec.sha256 or spec.sha256_prefix:
        digest = sha256_of(path)
        if spec.sha256 and digest != spec.sha256:
            return f"sha256 {digest[:12]}... != {spec.sha256[:12]}..."
        if spec.sha256_prefix and not digest.startswith(spec.sha256_prefix):
            return f"sha256 {digest[:8]} does not start with {spec.sha256_prefix}"
    return None


def default_cache() -> Path:
    return Path(os.environ.get("RESTOREVAR_WEIGHTS", os.environ.get("TORCH_HOME", "weights")))


def fetch_weights(cache: Path, allow_download: bool = True, progress: bool = True,
                  only: list[str] | None = None) -> list[dict]:
    if only:
        unknown = [n for n in only if n not in BY_NAME]
        if unknown:
            raise UserError(f"unknown weight {unknown[0]!r}; known: {', '.join(BY_NAME)}")
    rows = []
    for spec in WEIGHTS:
        if only and spec.name not in only:
            continue
        path = cache / spec.relpath
        problem = verify(spec, path)
        note = ""
        if problem and problem != "missing":
            note = f"bad file ({problem}); delete it to fetch again"
        elif problem == "missing" and allow_download:
            try:
                download(spec.url, path, spec.sha256, progress=progress)
                problem = verify(spec, path)
            except DownloadError as e:
                note = str(e)
            except UserError as e:  # checksum mismatch: download() removed the file
                note = str(e)
                problem = "missing"
        status = "present" if problem is None else ("missing" if problem == "missing" else "bad")
        rows.append({"name": spec.name, "status": status, "path": str(path), "url": spec.url,
                     "needed_by": list(spec.needed_by), "required": spec.required, "note": note or (problem or "")})
    return rows


def format_table(rows: list[dict]) -> str:
    head = ("weight", "status", "needed by", "path / note")
    body = [(r["name"], r["status"], ",".join(r["needed_by"]),
             r["path"] if r["status"] == "present" else f"{r['path']} <- {r['url']}" + (f" ({r['note']})" if r["note"] else ""))
            for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(3)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in [head, *body])


def metric_availability(cache: Path | None = None, check_hashes: bool = False) -> dict[str, tuple[bool, str]]:
    """Which weight-dependent metrics can run: ``{metric: (available, reason)}``.

    Without ``check_hashes`` only presence and size are checked (hashing 1 GB on every call is slow).
    """
    cache = cache or default_cache()
    out: dict[str, tuple[bool, str]] = {}
    for metric in ("lpips", "musiq", "clipiqa", "init_vqvae", "init_transformer"):
        missing = []
        for spec in WEIGHTS:
            if metric not in spec.needed_by:
                continue
            path = cache / spec.relpath
            if check_hashes:
                problem = verify(spec, path)
            else:
                problem = "missing" if not path.exists() else (
                    f"size {path.stat().st_size} != {spec.size}" if spec.size and path.stat().st_size != spec.size else None)
            if problem:
                missing.append(f"{spec.name} {problem}")
        out[metric] = (not missing, "available" if not missing else
                       f"unavailable: weights not cached ({'; '.join(missing)}); run `restorevar data fetch-weights --cache {cache}`")
    return out


# -- loading ------------------------------------------------------------------------------------
class WeightRefused(UserError):
    """A weight file that is not loaded; ``reason`` is the short form a metric reports."""

    def __init__(self, spec: WeightSpec, path: Path, reason: str, hint: str):
        super().__init__(f"weight {spec.name} ({path}) {reason}; {hint}")
        self.spec, self.path, self.reason = spec, path, reason


NO_DIGEST = "refused: no full digest known"


def _fetch_hint(cache: Path) -> str:
    return f"run `restorevar data fetch-weights --cache {cache}`"


def _has_full_digest(spec: WeightSpec) -> bool:
    return spec.sha256 is not None and len(spec.sha256) == 64


def _digest_problem(spec: WeightSpec, size: int, digest: str | None) -> str | None:
    if spec.size is not None and size != spec.size:
        return f"refused: size {size} bytes, not the published {spec.size}"
    if digest is not None and digest != spec.sha256:
        return f"refused: sha256 checksum {digest[:12]}... does not match the published {spec.sha256[:12]}..."
    return None


def load_problem(spec: WeightSpec, cache: Path) -> str | None:
    """None if ``load_verified`` would accept the file's bytes, else why not (it hashes the whole file)."""
    path = cache / spec.relpath
    if not _has_full_digest(spec):
        return NO_DIGEST
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    return _digest_problem(spec, size, None) or _digest_problem(spec, size, sha256_of(path))


def load_verified(spec: WeightSpec, cache: Path) -> dict[str, Any]:
    """The state dict in ``cache / spec.relpath``, from bytes that match the full published digest, read with
    ``torch.load(weights_only=True)``. Anything else raises ``WeightRefused`` and nothing is unpickled."""
    import torch

    path = cache / spec.relpath
    delete = f"delete {path} and {_fetch_hint(cache)}"
    if not _has_full_digest(spec):
        # a prefix only says which file was meant; a file forged to share it would be unpickled
        raise WeightRefused(spec, path, NO_DIGEST,
                            "it cannot be verified, so it is never loaded; the metric that needs it is unavailable")
    if not path.is_file():
        raise WeightRefused(spec, path, "missing", _fetch_hint(cache))
    problem = _digest_problem(spec, path.stat().st_size, None)
    if problem:
        raise WeightRefused(spec, path, problem, delete)
    data = path.read_bytes()  # hash and load the same bytes: the file may change between two reads
    problem = _digest_problem(spec, len(data), hashlib.sha256(data).hexdigest())
    if problem:
        raise WeightRefused(spec, path, problem, delete)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "Unsupported operand" in str(e):
            raise WeightRefused(spec, path, "refused: not a plain weights file (it holds pickled Python objects, "
                                "which are never unpickled)", "replace it with the published file") from None
        raise WeightRefused(spec, path, "refused: not readable as tensor data", delete) from None
    except Exception:  # noqa: BLE001 - torch raises many types for a damaged archive
        raise WeightRefused(spec, path, "refused: not readable as tensor data", delete) from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise WeightRefused(spec, path, "refused: not a plain weights file (not a mapping of names to tensors)",
                            "replace it with the published file")
    return obj


def unavailable_reason(problems: list[tuple[str, str]], cache: Path) -> str:
    """The one-line reason a metric is unavailable, from ``(weight name, problem)`` pairs."""
    missing = [f"{n} {p}" for n, p in problems if p == "missing"]
    refused = [f"{n} {p}" for n, p in problems if p != "missing"]
    parts = ([f"weights not cached ({'; '.join(missing)})"] if missing else []) + refused
    fix = _fetch_hint(cache)
    if all(p == NO_DIGEST for _, p in problems):
        fix = "a file without a known full digest is never loaded"
    elif any(p not in ("missing", NO_DIGEST) for _, p in problems):
        fix = f"delete the refused file(s) and {fix}"
    return f"unavailable: {'; '.join(parts)}; {fix}"
