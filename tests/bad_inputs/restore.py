"""`restorevar restore`: outputs that would replace the user's files, unusable folders, bad options, images
that cannot or should not be decoded.

An input that cannot be read (an unlistable folder, an image over the pixel cap, a FIFO) is skipped with a
warning and the run ends with exit code 1 and one error line, as for a corrupt image; a command that cannot
run at all ends with exit code 2.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from struct import pack

from bad_inputs import Case
from bad_inputs._fixtures import small_image, tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]

# Root ignores permission bits, and the tests run as root; this startup hook makes the command see the
# owner's bits as any other user would, so that a chmod'ed folder is refused as it would be for the user.
# For anyone but root it does nothing and the kernel itself refuses.
_AS_UNPRIVILEGED = '''
import os
import stat

if hasattr(os, "geteuid") and os.geteuid() == 0:
    _scandir, _access = os.scandir, os.access

    def _lacks(path, bits):
        try:
            return (os.stat(path).st_mode >> 6) & bits != bits
        except (OSError, TypeError, ValueError):
            return False

    def scandir(path="."):
        if not isinstance(path, int) and _lacks(path, 4):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return _scandir(path)

    def access(path, mode, **kw):
        bits = (4 if mode & os.R_OK else 0) | (2 if mode & os.W_OK else 0) | (1 if mode & os.X_OK else 0)
        if not isinstance(path, int) and _lacks(path, bits):
            return False
        return _access(path, mode, **kw)

    os.scandir, os.access = scandir, access
'''


def _as_unprivileged(setup):
    """Run ``setup``'s command with the hook above (from a folder it writes under the case's tmp)."""
    def wrapped(tmp: Path) -> list[str]:
        (tmp / "_as_user").mkdir()
        (tmp / "_as_user" / "sitecustomize.py").write_text(_AS_UNPRIVILEGED)
        return setup(tmp)
    # relative: the command runs in the case's tmp folder
    wrapped.env = {"PYTHONPATH": os.pathsep.join(["_as_user", str(ROOT)]), "PYTHONDONTWRITEBYTECODE": "1"}
    return wrapped


def _photos(tmp: Path, n: int = 2) -> Path:
    d = tmp / "photos"
    d.mkdir()
    for k in range(n):
        small_image(d / f"p{k}.png", seed=k)
    return d


def _restore(*args: str | Path, ckpt: str | Path = "model.pt") -> list[str]:
    return ["restore", *map(str, args), "--checkpoint", str(ckpt), "--quiet"]


# ------------------------------------------------------------------------------------------------
# Outputs that would replace the user's files (a real checkpoint: without the check they would be replaced)
# ------------------------------------------------------------------------------------------------
def _out_is_the_input_folder(tmp: Path) -> list[str]:
    _photos(tmp)
    return _restore("photos", "--out", "photos", ckpt=tiny_checkpoint(tmp / "model.pt").name)


def _out_inside_the_input_folder(tmp: Path) -> list[str]:
    d = _photos(tmp)
    (d / "restored").mkdir()
    small_image(d / "restored" / "p0.png", seed=9)  # a previous run's output, in the way
    return _restore("photos", "--out", "photos/restored", ckpt=tiny_checkpoint(tmp / "model.pt").name)


def _input_is_its_own_output(tmp: Path) -> list[str]:
    _photos(tmp)
    return _restore("photos/p0.png", "--out", "photos", "--overwrite", ckpt=tiny_checkpoint(tmp / "model.pt").name)


def _output_exists(tmp: Path) -> list[str]:
    _photos(tmp)
    (tmp / "out").mkdir()
    (tmp / "out" / "p1.png").write_bytes(b"the user's own picture, not a restored one")
    return _restore("photos", "--out", "out", ckpt=tiny_checkpoint(tmp / "model.pt").name)


def _output_exists_through_a_symlink(tmp: Path) -> list[str]:
    _photos(tmp)
    (tmp / "elsewhere").mkdir()
    small_image(tmp / "elsewhere" / "keep.png", seed=5)
    (tmp / "out").mkdir()
    (tmp / "out" / "p0.png").symlink_to(tmp / "elsewhere" / "keep.png")
    return _restore("photos", "--out", "out", ckpt=tiny_checkpoint(tmp / "model.pt").name)


# ------------------------------------------------------------------------------------------------
# Output folders that cannot be used (found before the checkpoint is read: any path will do)
# ------------------------------------------------------------------------------------------------
def _out_is_a_file(tmp: Path) -> list[str]:
    _photos(tmp)
    (tmp / "notes.txt").write_text("mine")
    return _restore("photos", "--out", "notes.txt")


def _out_under_a_file(tmp: Path) -> list[str]:
    _photos(tmp)
    (tmp / "notes.txt").write_text("mine")
    return _restore("photos", "--out", "notes.txt/restored")


@_as_unprivileged
def _out_in_a_read_only_folder(tmp: Path) -> list[str]:
    _photos(tmp)
    (tmp / "shared").mkdir()
    (tmp / "shared").chmod(0o555)
    return _restore("photos", "--out", "shared/restored")


# ------------------------------------------------------------------------------------------------
# Inputs that cannot be read: reported, the others restored (exit 1)
# ------------------------------------------------------------------------------------------------
@_as_unprivileged
def _unlistable_folder_and_a_good_one(tmp: Path) -> list[str]:
    _photos(tmp)
    (tmp / "locked").mkdir()
    small_image(tmp / "locked" / "x.png")
    (tmp / "locked").chmod(0o000)
    return _restore("locked", "photos", "--out", "out", ckpt=tiny_checkpoint(tmp / "model.pt").name)


@_as_unprivileged
def _only_an_unlistable_folder(tmp: Path) -> list[str]:
    (tmp / "locked").mkdir()
    small_image(tmp / "locked" / "x.png")
    (tmp / "locked").chmod(0o000)
    return _restore("locked", "--out", "out")


def _solid_grey_png(path: Path, w: int, h: int) -> None:
    """A valid 8-bit grey PNG of w x h pixels; a solid colour compresses to a few hundred kB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return pack(">I", len(data)) + kind + data + pack(">I", zlib.crc32(kind + data))
    z, row = zlib.compressobj(9), b"\x00" + b"\x80" * w
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _image_over_the_pixel_cap(tmp: Path) -> list[str]:
    _photos(tmp, 1)
    _solid_grey_png(tmp / "photos" / "huge.png", 12000, 12000)  # 144 MP: 432 MB once decoded to RGB
    return _restore("photos", "--out", "out", ckpt=tiny_checkpoint(tmp / "model.pt").name)


def _fifo_given_by_name(tmp: Path) -> list[str]:
    os.mkfifo(tmp / "camera.png")  # opening it would wait for a writer that never comes
    small_image(tmp / "good.png")
    return _restore("camera.png", "good.png", "--out", "out", ckpt=tiny_checkpoint(tmp / "model.pt").name)


def _symlink_loop_beside_a_good_image(tmp: Path) -> list[str]:
    """A link loop named like an image is passed over in a folder; given by name it is reported; either way the
    good image is restored (the folder used to be dropped whole, with a message about permissions)."""
    d = _photos(tmp, 1)
    (d / "loop.png").symlink_to("loop.png")
    (tmp / "loop.png").symlink_to("loop.png")
    return _restore("photos", "loop.png", "--out", "out", ckpt=tiny_checkpoint(tmp / "model.pt").name)


def _too_many_tiles(tmp: Path) -> list[str]:
    small_image(tmp / "wide.png", size=64)
    return _restore("wide.png", "--out", "out", "--mode", "tile", "--max-tiles", "4",
                    ckpt=tiny_checkpoint(tmp / "model.pt").name)


# ------------------------------------------------------------------------------------------------
# Options (found before the checkpoint is read)
# ------------------------------------------------------------------------------------------------
def _option(*extra: str):
    def setup(tmp: Path) -> list[str]:
        _photos(tmp, 1)
        return _restore("photos", "--out", "out", *extra)
    return setup


CASES = [
    Case("restore-out-is-the-input-folder", _out_is_the_input_folder, "--out photos is the input folder photos"),
    Case("restore-out-inside-the-input-folder", _out_inside_the_input_folder,
         "--out photos/restored is inside the input folder photos"),
    Case("restore-input-is-its-own-output", _input_is_its_own_output,
         "restoring photos/p0.png into photos would replace the input photos/p0.png"),
    Case("restore-output-exists-without-overwrite", _output_exists, "out/p1.png already exists; pass --overwrite"),
    Case("restore-output-is-a-symlink-without-overwrite", _output_exists_through_a_symlink,
         "out/p0.png already exists; pass --overwrite"),
    Case("restore-out-is-a-file", _out_is_a_file, "--out notes.txt is a file, not a folder"),
    Case("restore-out-under-a-file", _out_under_a_file, "cannot create --out notes.txt/restored"),
    Case("restore-out-in-a-read-only-folder", _out_in_a_read_only_folder, "cannot create --out shared/restored: no write permission in"),
    Case("restore-unlistable-folder-the-rest-restored", _unlistable_folder_and_a_good_one,
         "cannot list folder locked: permission denied", code=1),
    Case("restore-only-an-unlistable-folder", _only_an_unlistable_folder,
         "cannot list folder locked: permission denied, and no other input holds images"),
    Case("restore-image-over-the-pixel-cap", _image_over_the_pixel_cap,
         "huge.png is 12000x12000 (144.0 megapixels), over the 64000000-pixel limit; downscale it or pass "
         "--max-pixels 144000000", code=1),
    Case("restore-fifo-given-by-name", _fifo_given_by_name, "camera.png is not a regular file", code=1,
         timeout_s=60),
    Case("restore-unknown-device", _option("--device", "tpu9"), "unknown device 'tpu9'; use auto, cpu, cuda or cuda:N"),
    Case("restore-negative-top-k", _option("--top-k", "-5"), "top-k must be a whole number >= 0"),
    Case("restore-top-p-above-1", _option("--top-p", "2"), "top-p must be in [0, 1]"),
    Case("restore-seed-beyond-64-bits", _option("--seed", str(2**64)), "seed must fit in 64 bits"),
    Case("restore-max-pixels-zero", _option("--max-pixels", "0"), "argument --max-pixels: must be at least 1"),
    Case("restore-symlink-loop-the-rest-restored", _symlink_loop_beside_a_good_image,
         "cannot read image loop.png: too many levels of symbolic links", code=1),
    # tile mode's cost is bounded before any work: a near-1 overlap multiplies the passes without a gain
    Case("restore-tile-overlap-0.99", _option("--mode", "tile", "--overlap", "0.99"),
         "--overlap must be between 0 and 0.75, got 0.99"),
    Case("restore-tile-overlap-nan", _option("--mode", "tile", "--overlap", "nan"), "--overlap must be between"),
    Case("restore-too-many-tiles", _too_many_tiles, "wide.png (64x64) needs 9 tiles at --overlap 0.25, over the "
         "limit of 4; lower --overlap, use --mode resize, or pass --max-tiles 9"),
    Case("restore-max-tiles-zero", _option("--max-tiles", "0"), "argument --max-tiles: must be at least 1"),
    Case("restore-batch-size-huge", _option("--batch-size", "100000"), "--batch-size must be between 1 and 4096"),
]
