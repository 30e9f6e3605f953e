"""A photo corpus for pre-training the tokenizer and the prior, from sources that need no account or dataset site.

Sources (``build_corpus(sources, ...)``, ``restorevar data corpus --source ...``):

- ``shipped``: the training photographs of ``restorevar.data.photos`` (never the test ones).
- ``deb:<package>``: a Debian wallpaper package, fetched with ``apt-get download`` into a cache (an existing
  ``<package>_*.deb`` there is reused) and unpacked with ``dpkg-deb -x``; the images under usr/share/wallpapers
  and usr/share/backgrounds are taken. A KDE-style wallpaper folder ships one picture in several resolutions
  (``contents/images/*``, and its dark variant in ``contents/images_dark/``) plus a small preview
  (``contents/screenshot.*``): only the largest file of each ``images*`` folder is kept.
- ``folder:<path>``: every image file under a folder (recursive, sorted; links are not followed).

The package ``mate-backgrounds`` is reserved for an independent evaluation: it, and any path under
/usr/share/backgrounds/mate or holding ``mate-backgrounds``, is refused before any work. An image whose file or
decoded pixels equal those of a test or validation photograph is left out (``test scene``), as are exact duplicates and images
whose shorter side is under ``min_side``. Kept images are downscaled (Lanczos, never upscaled) so that their
shorter side is at most ``max_side`` and stored as PNG under ``images/``; ``corpus.json`` records each with
the SHA-256 of the stored file, which ``load_corpus`` checks.

A run writes into a temp folder beside ``out`` and moves ``images/`` and ``corpus.json`` in at the end, so an
interrupted run leaves ``out`` as it was; an earlier corpus is replaced only with ``overwrite``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import urllib.parse
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from restorevar.data.fetch import sha256_of
from restorevar.data.photos import photo_path, photos_for
from restorevar.errors import UserError
from restorevar.fileio import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    atomic_write,
    check_output_folder,
    move_into_place,
    read_image,
    staging_folder_beside,
    write_png,
)

CORPUS_VERSION = 1
CORPUS_JSON = "corpus.json"
IMAGES = "images"
OUTPUTS = (IMAGES, CORPUS_JSON)  # what a run writes at the top of ``out``; ``overwrite`` replaces only these
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
DEB_ROOTS = ("usr/share/wallpapers", "usr/share/backgrounds")

# kept for an independent evaluation: never read, in any split
RESERVED_PACKAGES = ("mate-backgrounds",)
RESERVED_DIRS = ("/usr/share/backgrounds/mate",)
RESERVED_FRAGMENT = "mate-backgrounds"

# the stereo pair is one scene (see restorevar.data.photos)
SHIPPED_SCENES = {"motorcycle_left": "motorcycle", "motorcycle_right": "motorcycle"}

_DEB_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # Debian policy 5.6.1
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_REBUILD = "rebuild it with `restorevar data corpus --source ... --out DIR --overwrite` (or `make pretrain`)"
_APT_TIMEOUT_S = 1800
_DPKG_TIMEOUT_S = 600


@dataclass(frozen=True)
class Source:
    kind: str  # "shipped", "deb" or "folder"
    arg: str  # the package name or the folder's absolute path ("" for shipped)

    @property
    def label(self) -> str:
        return "shipped" if self.kind == "shipped" else f"{self.kind}:{self.arg}"


@dataclass
class Candidate:
    source: str  # Source.label
    origin: str  # path inside the package or folder, or photo name
    path: Path  # the file to read
    scene: str
    name: str  # base of the stored file name


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _reserved_reason(path: str) -> str | None:
    """Why ``path`` (absolute, or a path inside a package given from its root) is reserved, or None."""
    if RESERVED_FRAGMENT in path.lower():
        return f"its path holds {RESERVED_FRAGMENT!r}"
    p = Path("/" + path.lstrip("/"))
    for d in RESERVED_DIRS:
        if p == Path(d) or Path(d) in p.parents:
            return f"it lies under {d}"
    return None


def _refuse_reserved(what: str, why: str) -> None:
    raise UserError(f"{what} is reserved for an independent evaluation ({why}): the mate-backgrounds images must "
                    "never be used in this project, in any split; remove that source")


def parse_source(text: str) -> Source:
    """A source string as a ``Source``; reserved and malformed ones raise UserError (nothing is read)."""
    if not isinstance(text, str) or not text.strip():
        raise UserError("an empty --source; give shipped, deb:<package> or folder:<path>")
    if text == "shipped":
        return Source("shipped", "")
    scheme, sep, arg = text.partition(":")
    if sep and scheme == "deb":
        if arg in RESERVED_PACKAGES or RESERVED_FRAGMENT in arg.lower():
            _refuse_reserved(f"source {text}", f"the package {arg} is kept apart")
        if not _DEB_NAME.match(arg):
            raise UserError(f"source {text}: {arg!r} is not a Debian package name (lowercase letters, digits, "
                            "'+', '-' and '.'); check the spelling, e.g. deb:plasma-workspace-wallpapers")
        return Source("deb", arg)
    if sep and scheme == "folder":
        if not arg:
            raise UserError("source folder: names no folder; give folder:<path>")
        given = Path(arg).expanduser()
        for shown in (os.path.abspath(given), str(given.resolve())):
            if (why := _reserved_reason(shown)) is not None:
                _refuse_reserved(f"source {text}", why)
        if not given.exists():
            raise UserError(f"source {text}: {os.path.abspath(given)} does not exist; check the path")
        if not given.is_dir():
            raise UserError(f"source {text}: {os.path.abspath(given)} is a file, not a folder; give the folder "
                            "that holds the images")
        return Source("folder", str(given.resolve()))
    raise UserError(f"unknown source {text!r}; give shipped, deb:<package> or folder:<path>")


def _validate(max_side: int, min_side: int) -> None:
    for flag, v in (("--max-side", max_side), ("--min-side", min_side)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise UserError(f"{flag} must be a positive number of pixels, got {v!r}")


# -- the output folder (as synth does it) ------------------------------------------------------------------
def _inside(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` or lies under it (both resolved)."""
    return a == b or b in a.parents


# -- listing sources ------------------------------------------------------------------------------------------
def _walk(top: Path, excluded: list[dict], source: str, rel_to: Path) -> list[Path]:
    """Regular image files under ``top``, sorted by path; links and special files are noted in ``excluded``."""
    found: list[Path] = []

    def note(p: Path, reason: str, detail: str) -> None:
        excluded.append({"source": source, "origin": p.relative_to(rel_to).as_posix(), "reason": reason,
                         "detail": detail})

    def failed(e: OSError) -> None:
        where = Path(e.filename) if e.filename else top
        note(where, "unreadable", f"cannot list the folder: {e.strerror or e}")

    for dirpath, dirnames, filenames in os.walk(top, onerror=failed, followlinks=False):
        dirnames.sort()
        d = Path(dirpath)
        for name in dirnames:
            if (d / name).is_symlink():
                note(d / name, "symbolic link", f"a link to the folder {os.readlink(d / name)}, not followed")
        for name in sorted(filenames):
            p = d / name
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                st = os.lstat(p)
            except OSError as e:
                note(p, "unreadable", _one_line(e.strerror or e))
                continue
            if stat.S_ISLNK(st.st_mode):
                note(p, "symbolic link", f"a link to {os.readlink(p)}, not followed")
            elif not stat.S_ISREG(st.st_mode):
                note(p, "not a regular file", "a FIFO, socket or device, skipped")
            else:
                found.append(p)
    return sorted(found, key=lambda p: p.relative_to(rel_to).as_posix())


def _safe(text: str) -> str:
    return _SAFE.sub("_", text).strip("_")[:60] or "image"


def _list_shipped() -> list[Candidate]:
    return [Candidate("shipped", p.name, photo_path(p), SHIPPED_SCENES.get(p.name, p.name), p.name)
            for p in photos_for("train")]


def _list_folder(src: Source, out: Path, excluded: list[dict]) -> list[Candidate]:
    top = Path(src.arg)
    out_real = out.resolve()
    if _inside(out_real, top) or _inside(top, out_real):
        raise UserError(f"source {src.label} holds --out {out} (or lies inside it): the corpus would read its own "
                        "output; give --out outside the folder")
    files = _walk(top, excluded, src.label, top)
    if not files and not any(e["source"] == src.label for e in excluded):
        raise UserError(f"source {src.label} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                        "check the path")
    cands = []
    for p in files:
        rel = p.relative_to(top).as_posix()
        if (why := _reserved_reason(str(p))) is not None:
            _refuse_reserved(f"{p} (in source {src.label})", why)
        stem = rel.rsplit(".", 1)[0]
        cands.append(Candidate(src.label, rel, p, stem, stem.replace("/", "_")))
    return cands


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header without decoding; (0, 0) when unreadable (read_image says why later)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the header is read
            with Image.open(path) as im:
                return im.size
    except Exception:  # noqa: BLE001 - PIL raises several types for bad files
        return (0, 0)


def _deb_candidates(src: Source, root: Path, excluded: list[dict]) -> list[Candidate]:
    """The pictures an unpacked package holds: one file per ``contents/images*`` folder, no previews."""
    files: list[Path] = []
    for sub in DEB_ROOTS:
        top = root / sub
        if top.is_dir() and not top.is_symlink():
            files += _walk(top, excluded, src.label, root)
    for p in files:
        if (why := _reserved_reason(p.relative_to(root).as_posix())) is not None:
            _refuse_reserved(f"{p.relative_to(root).as_posix()} in {src.label}", why)
    if not files:
        raise UserError(f"{src.label} holds no images under {' or '.join(DEB_ROOTS)}; is it a wallpaper "
                        "package? Extract the images yourself and use folder:<path> instead")

    def note(p: Path, reason: str, detail: str) -> None:
        excluded.append({"source": src.label, "origin": p.relative_to(root).as_posix(), "reason": reason,
                         "detail": detail})

    groups: dict[Path, list[Path]] = {}
    singles: list[Path] = []
    for p in files:
        if p.parent.name.startswith("images") and p.parent.parent.name == "contents":
            groups.setdefault(p.parent, []).append(p)
        elif p.parent.name == "contents" and any(c.is_dir() and c.name.startswith("images")
                                                  for c in p.parent.iterdir()):
            note(p, "preview thumbnail", f"a preview of the picture in {p.parent.relative_to(root).as_posix()}"
                 "/images*, which is kept instead")
        else:
            singles.append(p)
    keep = list(singles)
    for members in groups.values():
        sized = {p: _header_size(p) for p in members}
        best = max(members, key=lambda p: (sized[p][0] * sized[p][1], p.stat().st_size, p.name))
        keep.append(best)
        for p in members:
            if p is not best:
                w, h = sized[p]
                note(p, "smaller resolution", f"{w}x{h}: another size of the picture kept from "
                     f"{best.relative_to(root).as_posix()} ({sized[best][0]}x{sized[best][1]})")
    cands = []
    for p in sorted(keep, key=lambda p: p.relative_to(root).as_posix()):
        rel = p.relative_to(root).as_posix()
        top = next(r for r in DEB_ROOTS if rel.startswith(r + "/"))
        inner = rel[len(top) + 1:]
        parts = inner.split("/")
        if len(parts) >= 4 and parts[1] == "contents" and parts[2].startswith("images"):
            scene = parts[0]  # a wallpaper folder: <Name>/contents/images[_dark]/<size>.<ext>
            name = scene + parts[2][len("images"):]
        else:
            scene = inner.rsplit(".", 1)[0]
            name = scene.replace("/", "_")
        cands.append(Candidate(src.label, rel, p, scene, name))
    return cands


# -- Debian packages --------------------------------------------------------------------------------------------
def _no_tool(package: str, tool: str, cache: Path) -> UserError:
    return UserError(f"cannot get deb:{package}: {tool} is not installed; put its .deb into {cache} by hand, or "
                     "extract its images yourself and use folder:<path> instead")


def _run(cmd: list[str], timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess | str:
    """The finished process, or one line saying why it could not run or failed."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return f"{cmd[0]} did not finish in {timeout:.0f} s"
    except OSError as e:
        return f"{cmd[0]} could not run: {e.strerror or e}"
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("E:")] or lines
        return _one_line(errors[-1] if errors else f"{cmd[0]} exited with status {proc.returncode}")
    return proc


def _download_deb(package: str, cache: Path) -> Path:
    """``cache/<package>_<version>_<arch>.deb``: one already there, or one ``apt-get download`` fetches."""
    have = sorted(cache.glob(f"{package}_*.deb")) if cache.is_dir() else []
    if len(have) > 1:
        raise UserError(f"{cache} holds {len(have)} .deb files of {package} ({', '.join(p.name for p in have)}); "
                        "delete the ones you do not want")
    if have:
        return have[0]
    if shutil.which("apt-get") is None:
        raise _no_tool(package, "apt-get", cache)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{package}.download-", dir=cache))
    except OSError as e:
        raise UserError(f"cannot create --cache {cache} ({e.strerror or e}); give a folder you can write to") from None
    try:
        result = _run(["apt-get", "download", package], _APT_TIMEOUT_S, cwd=tmp)
        if isinstance(result, str):
            raise UserError(f"apt-get could not download deb:{package} ({result}); put its .deb into {cache} by hand, "
                            "or extract its images yourself and use folder:<path> instead")
        debs = sorted(tmp.glob(f"{package}_*.deb"))
        if len(debs) != 1:
            raise UserError(f"apt-get download {package} left {len(debs)} matching .deb files instead of one; "
                            f"put its .deb into {cache} by hand, or use folder:<path> instead")
        dest = cache / debs[0].name
        os.replace(debs[0], dest)  # only a complete download gets its final name
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _deb_field(deb: Path, field: str, package: str, cache: Path) -> str:
    if shutil.which("dpkg-deb") is None:
        raise _no_tool(package, "dpkg-deb", cache)
    result = _run(["dpkg-deb", "--field", str(deb), field], _DPKG_TIMEOUT_S)
    if isinstance(result, str):
        raise UserError(f"dpkg-deb cannot read {deb} for deb:{package} ({result}); delete it to download it again, "
                        "or use folder:<path> instead")
    return result.stdout.strip()


def _deb_version(deb: Path, package: str, cache: Path) -> str:
    parts = deb.name[:-len(".deb")].split("_")
    if len(parts) == 3 and parts[0] == package and parts[1]:
        return urllib.parse.unquote(parts[1])  # apt-get writes the epoch's ':' as %3a
    return _deb_field(deb, "Version", package, cache)


def _extract_deb(deb: Path, into: Path, package: str, cache: Path) -> None:
    if shutil.which("dpkg-deb") is None:
        raise _no_tool(package, "dpkg-deb", cache)
    result = _run(["dpkg-deb", "-x", str(deb), str(into)], _DPKG_TIMEOUT_S)
    if isinstance(result, str):
        raise UserError(f"dpkg-deb could not extract {deb} for deb:{package} ({result}); delete it to download it "
                        "again, or extract its images yourself and use folder:<path> instead")


def _get_deb(src: Source, cache: Path, work: Path, excluded: list[dict]) -> tuple[list[Candidate], dict[str, str]]:
    package = src.arg
    deb = _download_deb(package, cache)
    named = _deb_field(deb, "Package", package, cache)
    if named in RESERVED_PACKAGES or RESERVED_FRAGMENT in named:
        _refuse_reserved(f"{deb} (given as {src.label})", f"it is the package {named}")
    if named != package:
        raise UserError(f"{deb} holds the package {named!r}, not {package!r}; delete it from {cache} and run again")
    into = work / package
    into.mkdir()
    _extract_deb(deb, into, package, cache)
    cands = _deb_candidates(src, into, excluded)
    return cands, {"deb_sha256": sha256_of(deb), "version": _deb_version(deb, package, cache)}


# -- images ------------------------------------------------------------------------------------------------------
def pixel_sha256(rgb: np.ndarray) -> str:
    """SHA-256 of decoded HxWx3 uint8 pixels (with the shape, so a reshaped buffer differs)."""
    h = hashlib.sha256(f"{rgb.shape[0]}x{rgb.shape[1]}x{rgb.shape[2]}:".encode())
    h.update(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
    return h.hexdigest()


def _test_hashes() -> tuple[dict[str, str], dict[str, str]]:
    """file sha256 -> name and pixel sha256 -> name of the test and validation photographs, the scenes no model may
    train on (a missing one stops the build)."""
    files, pixels = {}, {}
    for p in photos_for("test") + photos_for("val"):
        path = photo_path(p)
        files[sha256_of(path)] = p.name
        pixels[pixel_sha256(np.asarray(read_image(path)))] = p.name
    return files, pixels


def downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Lanczos-downscaled so that the shorter side is at most ``max_side``; never upscaled."""
    h, w = rgb.shape[:2]
    short = min(h, w)
    if short <= max_side:
        return rgb
    scale = max_side / short
    size = (max_side, max(1, round(h * scale))) if w == short else (max(1, round(w * scale)), max_side)
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def build_corpus(sources: list[str], out: str | Path, *, max_side: int = 768, min_side: int = 128,
                 cache: str | Path | None = None, overwrite: bool = False, progress: bool = True,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """Build the corpus into ``out`` (a new or empty folder, or with ``overwrite`` an earlier corpus).

    Returns what ``corpus.json`` holds, plus ``seconds`` and ``kept`` (images per source).
    """
    started = time.perf_counter()
    if isinstance(sources, str):
        sources = [sources]
    if not sources:
        raise UserError("give at least one --source: shipped, deb:<package> or folder:<path>")
    parsed = [parse_source(s) for s in sources]  # reserved and malformed sources stop here, before any work
    labels = [s.label for s in parsed]
    twice = [lab for lab, n in Counter(labels).items() if n > 1]
    if twice:
        raise UserError(f"source {twice[0]} is given twice; give each source once")
    _validate(max_side, min_side)
    out = Path(out)
    check_output_folder(out, overwrite, "corpus", CORPUS_JSON)
    debs = [s for s in parsed if s.kind == "deb"]
    cache = Path(cache) if cache is not None else out.resolve().parent / ".deb-cache"
    if debs:
        if cache.exists() and not cache.is_dir():
            raise UserError(f"--cache {cache} is a file; give a folder for the downloaded .deb files")
        if _inside(cache.resolve(), out.resolve()):
            raise UserError(f"--cache {cache} lies inside --out {out}; keep the downloads outside the corpus")
    excluded: list[dict] = []
    listed: dict[str, list[Candidate]] = {}
    for s in parsed:  # cheap listings first: a refusal there comes before any download
        if s.kind == "shipped":
            listed[s.label] = _list_shipped()
        elif s.kind == "folder":
            listed[s.label] = _list_folder(s, out, excluded)
    test_files, test_pixels = _test_hashes()
    work = staging_folder_beside(out, "corpus-work")
    staged: Path | None = None
    try:
        deb_info: dict[str, dict[str, str]] = {}
        for s in debs:
            listed[s.label], deb_info[s.arg] = _get_deb(s, cache, work, excluded)
        staged = staging_folder_beside(out, "corpus")
        cands = [c for s in parsed for c in listed[s.label]]
        records, more = _write(cands, staged, test_files, test_pixels, max_side, min_side, max_pixels, progress)
        excluded += more
        if not records:
            first = f": first {excluded[0]['origin']} ({excluded[0]['reason']})" if excluded else ""
            raise UserError(f"no image was kept from {', '.join(labels)} ({len(excluded)} excluded{first}); "
                            "give other sources")
        info = {"corpus_version": CORPUS_VERSION, "max_side": max_side, "min_side": min_side, "sources": labels,
                "images": records, "excluded": excluded, "deb_packages": deb_info}
        text = json.dumps(info, indent=1, sort_keys=True) + "\n"
        atomic_write(staged / CORPUS_JSON, lambda tmp: Path(tmp).write_text(text))
    except OSError as e:  # disk full, I/O error: one line, and nothing of the half-written run is left
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        raise UserError(f"could not write the corpus beside {out}: {e.strerror or e}; free space or "
                        "choose another --out") from None
    except BaseException:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    move_into_place(staged, out, OUTPUTS, "the corpus")
    kept = Counter(r["source"] for r in records)
    return {**info, "seconds": round(time.perf_counter() - started, 2), "kept": {lab: kept[lab] for lab in labels}}


def _write(cands: list[Candidate], staged: Path, test_files: dict[str, str], test_pixels: dict[str, str],
           max_side: int, min_side: int, max_pixels: int | None, progress: bool) -> tuple[list[dict], list[dict]]:
    records: list[dict] = []
    excluded: list[dict] = []
    seen: dict[str, str] = {}  # pixel sha256 -> where it was kept
    width = max(3, len(str(len(cands))))

    def skip(c: Candidate, reason: str, detail: str) -> None:
        excluded.append({"source": c.source, "origin": c.origin, "reason": reason, "detail": _one_line(detail)})

    (staged / IMAGES).mkdir()
    for c in tqdm(cands, desc="corpus images", unit="image", disable=not progress):
        source_sha = sha256_of(c.path)
        if source_sha in test_files:
            skip(c, "test scene", f"the same file as the held-out photograph {test_files[source_sha]}")
            continue
        try:
            rgb = np.asarray(read_image(c.path, max_pixels=max_pixels))
        except ImageReadError as e:
            skip(c, "unreadable", str(e))
            continue
        digest = pixel_sha256(rgb)
        if digest in test_pixels:
            skip(c, "test scene", f"the same pixels as the held-out photograph {test_pixels[digest]}")
            continue
        h, w = rgb.shape[:2]
        if min(h, w) < min_side:
            skip(c, "too small", f"{w}x{h}: the shorter side is under {min_side} px")
            continue
        if digest in seen:
            skip(c, "duplicate", f"the same pixels as {seen[digest]}, kept once")
            continue
        seen[digest] = f"{c.source} {c.origin}"
        small = downscale(rgb, max_side)
        rel = f"{IMAGES}/{len(records):0{width}d}_{_safe(c.name)}.png"
        write_png(staged / rel, small)
        records.append({"file": rel, "sha256": sha256_of(staged / rel), "source_sha256": source_sha,
                        "source": c.source, "origin": c.origin, "scene": c.scene,
                        "width": int(small.shape[1]), "height": int(small.shape[0])})
    return records, excluded


# -- reading a corpus ------------------------------------------------------------------------------------------
def _corpus_json(path: str | Path) -> Path:
    p = Path(path)
    return p / CORPUS_JSON if p.is_dir() else p


def load_corpus(path: str | Path) -> list[dict[str, Any]]:
    """The image entries of a corpus (its folder or its corpus.json), each stored file checked by SHA-256.

    Each entry is the record of corpus.json plus ``path``, the stored file's absolute path.
    """
    p = _corpus_json(path)
    if not p.exists():
        raise UserError(f"corpus {p} not found; build it with `restorevar data corpus --source ... --out DIR`")
    if not p.is_file():
        raise UserError(f"corpus {p} is not a regular file; give the corpus.json (or its folder)")
    not_corpus = f"{p} is not a corpus.json of `restorevar data corpus`"
    try:
        info = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read corpus {p}: {e.strerror or e}; check its permissions") from None
    except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, a 5000-digit integer, nesting too deep
        raise UserError(f"{not_corpus} ({_one_line(e)}); {_REBUILD}") from None
    if not isinstance(info, dict) or not isinstance(info.get("images"), list):
        raise UserError(f"{not_corpus} (no 'images' list); {_REBUILD}")
    if info.get("corpus_version") != CORPUS_VERSION:
        raise UserError(f"{p} has corpus_version {info.get('corpus_version')!r}, this version reads "
                        f"{CORPUS_VERSION}; {_REBUILD}")
    if not info["images"]:
        raise UserError(f"corpus {p} holds no images; {_REBUILD} and other sources")
    root = p.parent.resolve()
    entries = []
    for i, e in enumerate(info["images"]):
        if not (isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("file", "sha256", "scene"))):
            raise UserError(f"{not_corpus}: image {i} lacks a file, sha256 or scene string; {_REBUILD}")
        f = (root / e["file"]).resolve()
        if Path(e["file"]).is_absolute() or not _inside(f, root):
            raise UserError(f"{p}: image {i} file {e['file']!r} leaves the corpus folder; {_REBUILD}")
        if not f.is_file():
            raise UserError(f"{f}, listed in {p}, is missing or not a file; {_REBUILD}")
        try:
            got = sha256_of(f)
        except OSError as e2:
            raise UserError(f"cannot read {f}, listed in {p}: {e2.strerror or e2}; check its permissions") from None
        if got != e["sha256"]:
            raise UserError(f"{f} does not match its sha256 in {p} (changed or corrupted since the build); "
                            f"{_REBUILD}")
        entries.append({**e, "path": str(f)})
    return entries


def corpus_arrays(path: str | Path) -> list[np.ndarray]:
    """The corpus' images as HxWx3 uint8 arrays, in the order of ``load_corpus`` (which checks them first)."""
    return [np.asarray(read_image(e["path"])) for e in load_corpus(path)]
