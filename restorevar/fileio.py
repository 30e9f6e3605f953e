"""Atomic writes and image reading with errors that name the file."""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from restorevar.errors import UserError

# 64 megapixels: more than any common camera writes (full-frame sensors top out near 61 MP, 8K video frames
# are 33 MP), yet the decoded RGB is only 192 MB and restoring it tile by tile, whose float32 tiles,
# overlaps and blend buffers take about 100 bytes a pixel, needs about 6 GB: what an ordinary machine has.
# A small file can declare a huge image (a solid colour compresses to almost nothing), so the size is
# read from the header and checked before anything is decoded.
DEFAULT_MAX_PIXELS = 64_000_000

# PIL has its own guard (a warning on stderr from 89 MP, an error from 179 MP). It would speak before the
# cap above and refuse images a caller allowed with a higher one, so the cap replaces it while a file is
# opened; the lock keeps two threads from restoring each other's value.
_PIL_LIMIT = threading.Lock()


class ImageReadError(UserError):
    """An image that is missing, corrupt or truncated; the message names the file."""


class ImageTooLargeError(ImageReadError):
    """An image whose header declares more pixels than the caller allows."""

    def __init__(self, path: Path, size: tuple[int, int], limit: int):
        self.path, self.size, self.limit = path, size, limit
        self.pixels = size[0] * size[1]
        super().__init__(f"{path} is {size[0]}x{size[1]} ({self.pixels / 1e6:.1f} megapixels), over the limit of "
                         f"{limit} pixels; downscale it or raise the limit")

    def __reduce__(self):  # exceptions cross process boundaries (data loader workers) by pickling
        return type(self), (self.path, self.size, self.limit)


def path_inside(root: str | Path, *names: str) -> Path:
    """``root / name / ...``, refused unless every name is one plain component and the result stays inside
    ``root``: the names come from files a user wrote (a manifest's ids), and a '..' or an absolute path among
    them would write anywhere on disk."""
    root = Path(root)
    for name in names:
        if name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name:
            raise UserError(f"{name!r} cannot name a file inside {root}; an id or dataset name must be one plain "
                            "name (run `restorevar data check` on the manifest)")
    out = root.joinpath(*names)
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(out)]) != real_root:
        raise UserError(f"{out} leads outside {root} (through a link); remove the link or choose another folder")
    return out


_TEMP = re.compile(r"^\..+\.(\d+)-[^.]+\.tmp$")  # ".<name>.<pid>-<random>.tmp", as atomic_write names them


def atomic_write(path: str | Path, write, replace: bool = True) -> None:
    """Call ``write(tmp_path)`` then publish it as ``path``; the old file survives any failure.

    ``replace=False`` publishes without replacing: if ``path`` appeared meanwhile (another run writing into
    the same folder), FileExistsError, and that run's file stays as it was. The temp file's name carries
    this process's id, so that ``remove_stale_temps`` can tell a killed run's leftovers from a live one's.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; the file gets the usual permissions
        if replace:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _publish_new(tmp: str, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if nothing has it: a hard link fails where the name exists (a rename
    would replace it). Where the file system has no hard links, an exclusive create claims the name first."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise
    except OSError:
        pass  # no hard links here (some network and FAT file systems)
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # FileExistsError if taken
    os.replace(tmp, path)


def remove_stale_temps(folder: str | Path) -> list[str]:
    """Remove the temp files that a killed run of atomic_write left in ``folder`` (those whose process is
    gone); returns their names. A live run's temp files are left alone."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        m = _TEMP.match(e.name)
        if not m or not e.is_file(follow_symlinks=False) or _alive(int(m.group(1))):
            continue
        try:
            os.unlink(e.path)
            removed.append(e.name)
        except OSError:
            pass  # another run cleaned it first, or it is not ours to remove
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process (or a number no pid can be)
        return True
    return True


def publish_copy(src: str | Path, dst: str | Path) -> None:
    """Give ``dst`` the contents of ``src`` atomically, as a hard link where the filesystem allows one, else as
    a copy. A link costs no disk, which matters for checkpoints of gigabytes; it is safe because the files
    this is for are only ever replaced by a rename (``atomic_write``), never rewritten in place, so a later
    write to ``src`` leaves ``dst`` as it was. The link keeps ``src``'s permissions (it is the same file)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
    try:
        os.link(src, tmp)
    except OSError:  # another filesystem, or one without hard links
        atomic_write(dst, lambda t: shutil.copyfile(src, t))
        return
    try:
        os.replace(tmp, dst)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _cannot_create(folder: Path) -> str | None:
    """Why ``folder`` could not be created or written, or None: the nearest part of the path that exists
    must be a folder (not a file) this process can write. ``os.access`` is what the kernel would decide, so
    for root only a read-only file system says no, and root can indeed write everywhere else."""
    existing = folder.resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no write permission in {existing}"
    return None


def check_folder_writable(folder: str | Path, flag: str) -> None:
    """Raise UserError unless ``folder`` is, or could be created as, a folder this process can write.

    Checked before any long work, so that it cannot fail at the end of it.
    """
    folder = Path(folder)
    if (why := _cannot_create(folder)) is not None:
        raise UserError(f"cannot {'write' if folder.is_dir() else 'create'} {flag} {folder}: {why}; "
                        "choose another path")


def check_output_folder(out: Path, overwrite: bool, what: str, marker: str) -> None:
    """``out`` may be written as ``what`` (a folder): it is new or empty, or, with ``overwrite``, holds an
    earlier run's output (its ``marker`` file). Anything else is a UserError naming the way out."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, but {what} is a folder; give a new or empty folder path")
    try:
        present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    except OSError as e:
        raise UserError(f"cannot list --out {out} ({e.strerror or e}); give a folder you can write to") from None
    if present and not overwrite:
        raise UserError(f"--out {out} is not empty (it holds {present[0]}); give a new or empty folder, "
                        f"or pass --overwrite to replace an earlier {what} there")
    if present and marker not in present:  # --overwrite replaces only what an earlier run wrote
        raise UserError(f"--out {out} holds {present[0]} but no {marker}, so it is not an earlier {what} "
                        "and --overwrite will not replace it; give a new or empty folder")


def check_output_file(path: str | Path, flag: str) -> None:
    """Raise UserError unless ``path`` can be written as a regular file (see ``check_folder_writable``)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name, e.g. {path / 'out.json'}")
    if path.exists() and not path.is_file():
        raise UserError(f"{flag} {path} is not a regular file (a FIFO, socket or device); give a file name")
    if (why := _cannot_create(path.parent)) is not None:
        raise UserError(f"cannot write {flag} {path}: {why}; choose another path")


@dataclass(frozen=True)
class Refusals:
    """How one kind of input file is refused: the error type and the messages (``{path}``, ``{why}``, ``{size}``
    and ``{limit}`` are filled in)."""
    error: type[Exception]
    missing: str
    unreadable: str
    folder: str
    not_regular: str
    too_big: str = "{path} is {size} bytes, over the limit of {limit}; give the right file"


IMAGE = Refusals(ImageReadError, missing="image not found: {path}; check the path",
                 unreadable="cannot read image {path}: {why}; check its permissions",
                 folder="{path} is a folder, not an image file; give the images inside it",
                 not_regular="{path} is not a regular file (a FIFO, socket or device); give an image file")


def input_file(what: str) -> Refusals:
    """The refusals of a text or data input named ``what`` in messages ("baseline", "results file")."""
    return Refusals(UserError, missing=f"{what} {{path}} not found; check the path",
                    unreadable=f"cannot read {what} {{path}}: {{why}}; check the path and its permissions",
                    folder=f"{what} {{path}} is a folder; give the file inside it",
                    not_regular=f"{what} {{path}} is not a regular file (a FIFO, socket or device); give a file",
                    too_big=f"{what} {{path}} is {{size}} bytes, over the limit of {{limit}}; give the right file")


def open_regular(path: str | Path, refusals: Refusals, max_bytes: int | None = None):
    """A binary file object, refusing anything but a regular file (or one over ``max_bytes``) without blocking.

    A FIFO would block ``open`` until someone writes to it, and a device may act on being opened, so the
    file is stat'ed first; the descriptor is opened non-blocking and checked again, in case the path was
    swapped in between.
    """
    def refuse(message: str, **fields) -> Exception:
        return refusals.error(message.format(path=path, **fields))

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise refuse(refusals.missing) from None
    except OSError as e:
        raise refuse(refusals.unreadable, why=e.strerror or e) from None
    if stat.S_ISDIR(st.st_mode):
        raise refuse(refusals.folder)
    if not stat.S_ISREG(st.st_mode):
        raise refuse(refusals.not_regular)
    if max_bytes is not None and st.st_size > max_bytes:
        raise refuse(refusals.too_big, size=st.st_size, limit=max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise refuse(refusals.unreadable, why=e.strerror or e) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between the stat and the open
        os.close(fd)
        raise refuse(refusals.not_regular)
    return os.fdopen(fd, "rb")


# A JSON, CSV or YAML input this large is not one the suite wrote; reading it would only cost memory.
MAX_TEXT_BYTES = 512 * 1024 * 1024


def read_regular_text(path: str | Path, what: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path``, which must be a regular file (a FIFO would block forever, a device may act
    on being opened): anything else, a missing or unreadable file, or bytes that are not UTF-8 is a UserError
    naming ``what`` (e.g. "baseline") and the file."""
    path = Path(path)
    with open_regular(path, input_file(what), max_bytes) as f:
        data = f.read(max_bytes + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {e.start}); give the text file the suite "
                        "wrote") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB from any mode PIL decodes, each by its real range.

    - 16-bit grey (``I;16*``) and 32-bit integer (``I``, which is how 16-bit files also arrive) images are
      read as 0..65535 and scaled by 255/65535 (values outside are clipped), not clipped at 255, which would
      turn almost every pixel white. 16-bit RGB(A) files PIL already reduces to 8 bits itself.
    - Float images (``F``, e.g. 32-bit TIFF) are taken as [0, 1] when no finite value exceeds 1 and scaled
      by 255; otherwise as [0, 255]. Either way values are then clipped to [0, 255] and NaN reads as 0.
    - Grey, palette and the rest go through PIL's own conversion; an alpha channel is dropped (the colour
      stored under it remains), as before.
    """
    if im.mode == "I" or im.mode.startswith("I;16"):
        a = np.clip(np.asarray(im).astype(np.float64), 0, 65535)
        return Image.fromarray(np.round(a * (255 / 65535)).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        a = np.asarray(im).astype(np.float64)
        a = np.where(np.isnan(a), 0.0, a)
        finite = a[np.isfinite(a)]
        scale = 255.0 if finite.size == 0 or finite.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.round(a * scale), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("P", "PA") and "transparency" in im.info:
        im = im.convert("RGBA")  # the same colours, without PIL's warning about palette transparency
    return im.convert("RGB")


def image_header_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) as the image will be read (EXIF rotation applied), from its header alone; None for a
    file that cannot be opened as an image (reading it says why)."""
    try:
        with open_regular(Path(path), IMAGE) as f, _PIL_LIMIT:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # only the header is read: nothing is decoded
            try:
                with Image.open(f) as im:
                    w, h = im.size
                    turned = im.getexif().get(0x0112) in (5, 6, 7, 8)  # orientations that swap the sides
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except Exception:  # noqa: BLE001 - PIL raises several types; read_image reports the file later
        return None
    return (h, w) if turned else (w, h)


def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS, exif_orientation: bool = False) -> Image.Image:
    """Fully decoded RGB image (see ``_to_rgb`` for how other modes are converted).

    A missing, corrupt or truncated file, a folder, FIFO or device raises ImageReadError naming it; an image
    whose header declares more than ``max_pixels`` pixels (None: no limit) raises ImageTooLargeError before
    it is decoded. ``exif_orientation`` turns the pixels as the file's EXIF orientation says, as viewers
    show it (the result carries no orientation tag).
    """
    path = Path(path)
    with open_regular(path, IMAGE) as f:
        try:
            with _PIL_LIMIT:
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    im = Image.open(f)
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
        except Exception as e:  # noqa: BLE001 - PIL raises several types for bad files
            raise ImageReadError(f"cannot decode image {path} (corrupt or truncated?): {e}") from None
        with im:
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise ImageTooLargeError(path, im.size, max_pixels)
            try:
                im.load()
                if exif_orientation:
                    im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
            except Exception as e:  # noqa: BLE001
                raise ImageReadError(f"cannot decode image {path} (corrupt or truncated?): {e}") from None


def write_png(path: str | Path, array_HW3: np.ndarray) -> None:
    """Deterministic PNG bytes (no timestamps), written atomically."""
    img = Image.fromarray(array_HW3)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG", optimize=False, compress_level=6))


# ------------------------------------------------------------------------------------------------
# Folders written whole: staged beside the output, moved in only when finished
# ------------------------------------------------------------------------------------------------
def staging_folder_beside(out: Path, kind: str) -> Path:
    """A temp folder beside ``out`` (same file system, so the final moves are renames)."""
    try:
        parent = out.resolve().parent  # beside the real folder when --out is a link to one
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(parent, f".{out.name}.{kind}-")
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.{kind}-{os.getpid()}-", dir=parent))
    except OSError as e:
        raise UserError(f"cannot create a folder beside --out {out} ({e.strerror or e}); "
                        "give a path in a writable folder") from None


def _remove_stale_staging(parent: Path, prefix: str) -> None:
    """Remove the staging folders (``<prefix><pid>-<random>``) that killed runs left beside an output; a live
    run's folder is left alone."""
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(prefix)]
    except OSError:
        return
    for e in entries:
        pid = e.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and e.is_dir(follow_symlinks=False) and not _alive(int(pid)):
            shutil.rmtree(e.path, ignore_errors=True)


def move_into_place(staged: Path, out: Path, outputs: tuple[str, ...], what: str) -> None:
    """Move a finished run in; an existing ``out`` loses only the entries named in ``outputs`` (each replaced
    whole), and a failure part-way leaves the finished run in ``staged``."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(staged, 0o777 & ~mask)  # mkdtemp makes 0700; the folder gets the usual permissions
    try:
        if not out.exists():
            os.rename(staged, out)
            return
        for name in outputs:
            src, dst = staged / name, out / name
            if not src.exists():
                continue
            if dst.is_dir() and not dst.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=out))
                os.rename(dst, old / name)  # out of the way first, so a failure below loses nothing
                try:
                    os.rename(src, dst)
                except OSError:
                    os.rename(old / name, dst)
                    raise
                shutil.rmtree(old)
            else:
                os.replace(src, dst)
    except OSError as e:
        raise UserError(f"cannot move {what} into --out {out} ({e.strerror or e}); "
                        f"the finished run is left in {staged}") from None
    shutil.rmtree(staged, ignore_errors=True)
