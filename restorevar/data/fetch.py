"""Downloads that resume, verify and never leave a half-written result that looks complete.

- A download goes to ``NAME.part`` (resumed with an HTTP Range request), is checked against its sha256
  when one is known, and only then renamed to its final name.
- An archive is extracted into a temporary sibling folder, which is renamed into place and marked with
  ``.complete`` only after extraction finished.
``file://`` URLs work the same way, which is how the tests exercise it offline.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from restorevar.errors import UserError
from restorevar.fileio import atomic_write

CHUNK = 1 << 20
COMPLETE = ".complete"


class DownloadError(UserError):
    """The network refused or broke off; the caller may fall back to manual instructions."""


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: str | Path, sha256: str | None = None, progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest`` with resume and checksum; returns ``dest``. Idempotent when already complete."""
    dest = Path(dest)
    if dest.exists():
        if sha256 and sha256_of(dest) != sha256:
            raise UserError(f"{dest} exists but its sha256 does not match {sha256[:12]}...; delete it and fetch again")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range past the end: the .part is already whole
            resp = None
        else:
            raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"cannot reach {url} ({getattr(e, 'reason', e)}); no network?") from None
    if resp is not None:
        with resp:
            status = getattr(resp, "status", None) or resp.getcode()
            resumed = have > 0 and status == 206
            if not resumed:
                have = 0  # the server ignored the range (or file://): start over
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            with open(part, "ab" if resumed else "wb") as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=not progress
            ) as bar:
                try:
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        f.write(block)
                        bar.update(len(block))
                except OSError as e:
                    raise DownloadError(f"download of {url} broke off ({e}); run again to resume") from None
            if total is not None and part.stat().st_size < total:
                raise DownloadError(f"download of {url} stopped at {part.stat().st_size} of {total} bytes; "
                                    "run again to resume")
    if sha256:
        got = sha256_of(part)
        if got != sha256:
            part.unlink()
            raise UserError(f"checksum mismatch for {url}: expected sha256 {sha256[:12]}..., got {got[:12]}...; "
                            "the partial file was removed, fetch again")
    os.replace(part, dest)
    return dest


def is_complete(folder: str | Path) -> bool:
    return (Path(folder) / COMPLETE).exists()


def mark_complete(folder: str | Path, info: dict) -> None:
    text = json.dumps(info, indent=1, sort_keys=True) + "\n"
    atomic_write(Path(folder) / COMPLETE, lambda tmp: Path(tmp).write_text(text))


def _safe_members(names: list[str], into: Path) -> None:
    root = into.resolve()
    for n in names:
        target = (into / n).resolve()
        if root != target and root not in target.parents:
            raise UserError(f"archive member {n!r} would be written outside {into}; refusing to extract")


def extract(archive: str | Path, into: str | Path) -> Path:
    """Extract into a temp folder beside ``into`` and move its contents in only when extraction finished."""
    archive, into = Path(archive), Path(into)
    into.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", dir=into))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                _safe_members(z.namelist(), tmp)
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                _safe_members(t.getnames(), tmp)
                t.extractall(tmp, filter="data")
        else:
            raise UserError(f"{archive} is neither a zip nor a tar archive; was the download corrupted?")
        for child in tmp.iterdir():
            final = into / child.name
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            os.replace(child, final)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise UserError(f"cannot extract {archive} (corrupt or truncated?): {e}; delete it and fetch again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return into
