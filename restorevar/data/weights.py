"""Weights that metrics and initialisation need, where they live in the cache, and which are present.

The cache folder plays the role of ``TORCH_HOME``: pyiqa (0.1.16) keeps its files in
``$TORCH_HOME/hub/pyiqa``, CLIP in ``$TORCH_HOME/hub/clip``, torchvision in ``$TORCH_HOME/hub/checkpoints``.
Point ``TORCH_HOME`` (and ``HF_HOME``) at the cache and those libraries find the files without a network.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from restorevar.data.fetch import DownloadError, download, sha256_of
from restorevar.errors import UserError

PYIQA = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"


@dataclass(frozen=True)
class WeightSpec:
    name: str
    relpath: str  # under the cache (= TORCH_HOME)
    url: str
    sha256: str | None = None  # full digest where published
    sha256_prefix: str | None = None  # where only the file name's hash prefix is known
    size: int | None = None
    needed_by: tuple[str, ...] = ()
    required: bool = True


WEIGHTS: tuple[WeightSpec, ...] = (
    WeightSpec("alexnet", "hub/checkpoints/alexnet-owt-7be5be79.pth",
               "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", sha256_prefix="7be5be79",
               needed_by=("lpips",)),
    WeightSpec("lpips_alex", "hub/pyiqa/LPIPS_v0.1_alex-df73285e.pth", PYIQA + "LPIPS_v0.1_alex-df73285e.pth",
               sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0", needed_by=("lpips",)),
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
