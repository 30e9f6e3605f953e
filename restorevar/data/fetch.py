"""Downloads that resume, verify and never leave a half-written result that looks complete.

- A download goes to ``NAME.part`` (resumed with an HTTP Range request), is checked against its sha256
  when one is known, and only then renamed to its final name.
- An archive is extracted into a temporary folder and its entries are renamed into place only after
  extraction finished; an existing file or folder of the same name is never replaced (extraction refuses,
  naming it). The dataset folder is marked with ``.complete`` only once it was adapted.
``file://`` URLs work the same way, which is how the tests exercise it offline.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from restorevar.errors import UserError
from restorevar.fileio import atomic_write

CHUNK = 1 << 20
COMPLETE = ".complete"
DOWNLOADS = "_downloads"  # where a dataset folder keeps its archives


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
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {dest.parent} for the download ({e.strerror or e}); "
                        "give a folder you can write to") from None
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


def _safe_members(names: list[str], tmp: Path, archive: Path, into: Path) -> None:
    root = tmp.resolve()
    for n in names:
        target = (tmp / n).resolve()
        if root != target and root not in target.parents:
            raise UserError(f"archive member {n!r} of {archive.name} would be written outside {into}; refusing to "
                            "extract it (a damaged or hostile archive?): delete it and fetch again")


def _record_path(archive: Path, into: Path) -> Path:
    return into / f".{archive.name}.extracted"


def _recorded(archive: Path, into: Path) -> set[str]:
    """Top-level names an earlier extraction of ``archive`` put into ``into`` (empty when none did)."""
    try:
        names = json.loads(_record_path(archive, into).read_text())["names"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return {n for n in names if isinstance(n, str)}


def extract(archive: str | Path, into: str | Path) -> Path:
    """Extract into a temp folder inside ``into``, then move each top-level entry into place.

    Nothing that already exists in ``into`` is replaced or deleted: an entry an earlier extraction of the same
    archive put there is kept as it is (so a fetch that stopped after extracting can run again), and any other
    existing entry of the same name makes the whole extraction refuse before anything moves.
    """
    archive, into = Path(archive), Path(into)
    ours = _recorded(archive, into)
    if ours and all((into / n).exists() for n in ours):
        return into  # extracted before; extracting again would only be thrown away
    try:
        into.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", dir=into))
    except OSError as e:
        raise UserError(f"cannot extract {archive.name} into {into} ({e.strerror or e}); "
                        "give a dataset root you can write to") from None
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                _safe_members(z.namelist(), tmp, archive, into)
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                _safe_members(t.getnames(), tmp, archive, into)
                t.extractall(tmp, filter="data")
        else:
            raise UserError(f"{archive} is neither a zip nor a tar archive; was the download corrupted?")
        names = sorted(child.name for child in tmp.iterdir())
        reserved = [n for n in names if n in (COMPLETE, DOWNLOADS)]
        if reserved:  # it would mark the folder complete before it was adapted, or mix into the downloads
            raise UserError(f"archive {archive} holds a top-level {reserved[0]}, a name fetch keeps for itself; "
                            "refusing to extract it (is it the right archive?): delete it and fetch again")
        clash = [n for n in names if (into / n).exists() or (into / n).is_symlink()]
        foreign = [n for n in clash if n not in ours]
        if foreign:
            raise UserError(f"cannot extract {archive.name}: {into / foreign[0]} already exists and did not come "
                            "from this archive; move it out of the way and fetch again, or use what is there "
                            "with `restorevar data fetch --no-download`")
        # recorded before moving: a run that stops half-way knows, next time, which entries are its own
        record = json.dumps({"archive": archive.name, "names": names}, indent=1) + "\n"
        atomic_write(_record_path(archive, into), lambda t: Path(t).write_text(record))
        for name in names:
            if name not in clash:
                os.rename(tmp / name, into / name)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, NotImplementedError) as e:
        # (BadGzipFile is an OSError: caught here, before the disk-space branch below)
        raise UserError(f"cannot extract {archive} (corrupt or truncated?): {e}; delete it and fetch again") from None
    except OSError as e:
        raise UserError(f"cannot extract {archive} into {into} ({e.strerror or e}); "
                        "check the free space and permissions there, then fetch again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return into
