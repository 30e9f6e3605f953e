"""Restore images of any size with a model trained at a fixed square size.

Two ways to bridge the size gap, both documented in the README:
- ``resize`` (default): resize to the model's size (Lanczos), restore, resize back (bicubic). Fast; fine
  detail is limited by the model's resolution.
- ``tile``: cover the image with overlapping model-sized tiles (reflect-padded where the image is smaller),
  restore each and blend them with feathered weights, so seams do not show. Keeps full resolution; cost
  grows with the area.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from PIL import Image

from restorevar.checkpoint import config_from_checkpoint, load_checkpoint, load_components
from restorevar.errors import UserError
from restorevar.fileio import check_folder_writable
from restorevar.imaging import from_uint8, to_pil
from restorevar.inference.engine import PLAIN, Engine, fast
from restorevar.models import RestoreVAR

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# a directory given as --checkpoint: the pipeline's final export first, then a trainer's own checkpoint
CHECKPOINT_NAMES = ("train_refiner.pt", "restorevar.pt", "last.pt")


# Beyond three quarters of a tile shared with each neighbour, every pixel is restored 16 times or more and
# the feathered blend gains nothing visible: a larger overlap only multiplies the cost (at 0.99, 10,000 times).
MAX_OVERLAP = 0.75
# A 16-megapixel photograph at the cpu preset's 64 px tiles and the default overlap needs about 7,000 tiles;
# more than this is minutes to hours of work that a typo in --overlap should not start unasked.
MAX_TILES = 10_000


@dataclass
class RestoreOptions:
    mode: Literal["resize", "tile"] = "resize"
    overlap: float = 0.25  # tile mode: fraction of the tile shared with its neighbour
    batch_size: int = 8  # tiles per forward pass
    max_tiles: int = MAX_TILES  # tile mode: an image that needs more is refused before any work
    top_k: int = 0
    top_p: float = 0.0
    seed: int | None = None
    device: str = "auto"
    dtype: Literal["fp32", "bf16"] = "fp32"  # bf16: faster on GPUs and AMX CPUs; tokens may differ from fp32
    plain: bool = False  # the unoptimised reference path (same results in fp32; for comparison)

    def validate(self) -> None:
        fast(self.dtype)  # names an unknown dtype
        if self.plain and self.dtype != "fp32":
            raise UserError("the plain path runs in fp32 only; drop --plain or use --dtype fp32")
        if self.mode not in ("resize", "tile"):
            raise UserError(f"unknown mode {self.mode!r}; use resize or tile")
        if not 0 <= self.overlap <= MAX_OVERLAP:  # NaN fails this too
            raise UserError(f"--overlap must be between 0 and {MAX_OVERLAP}, got {self.overlap}; a larger overlap "
                            "multiplies the work without a visible gain")
        if not 1 <= self.batch_size <= 4096:
            raise UserError(f"--batch-size must be between 1 and 4096, got {self.batch_size}")
        if self.max_tiles < 1:
            raise UserError(f"--max-tiles must be at least 1, got {self.max_tiles}")
        if self.top_k < 0:
            raise UserError(f"top-k must be a whole number >= 0 (0: greedy), got {self.top_k}")
        if not 0 <= self.top_p <= 1:  # NaN fails this too
            raise UserError(f"top-p must be in [0, 1] (0: off), got {self.top_p}")
        if self.seed is not None and not -(2**63) <= self.seed < 2**64:  # what torch.Generator accepts
            raise UserError(f"seed must fit in 64 bits, got {self.seed}")
        from restorevar.device import pick_device

        pick_device(self.device)  # an unknown or missing device is named before the checkpoint is read


def find_checkpoint(path: str | Path) -> Path:
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in CHECKPOINT_NAMES:
            if (path / name).is_file():
                return path / name
        raise UserError(f"no checkpoint in {path} (looked for {', '.join(CHECKPOINT_NAMES)}); "
                        "run `make repro` or pass the .pt file")
    raise UserError(f"checkpoint not found: {path}; run `make repro` first or check the path")


def list_inputs(inputs: list[str | Path], problems: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted, not recursive), each path once.

    Inside a folder only regular files with an image suffix count: a FIFO or socket named like an image is
    passed over (opening one would block). A folder that cannot be listed raises UserError, or, when
    ``problems`` is given, is appended to it as (folder, reason) so that the other inputs still run.
    """
    out: list[Path] = []
    seen: set[str] = set()
    for item in map(Path, inputs):
        if item.is_dir():
            try:
                with os.scandir(item) as it:
                    found = sorted(item / e.name for e in it
                                   if Path(e.name).suffix.lower() in IMAGE_SUFFIXES and _is_file(e))
            except OSError as e:
                reason = f"cannot list folder {item}: {e.strerror or e}"
                if problems is None:
                    raise UserError(f"{reason}; check its permissions") from None
                problems.append((item, reason))
                continue
        else:
            found = [item]  # a missing or special file is reported when it is read, with the others
        for p in found:
            key = os.path.realpath(p)  # a symlink loop resolves as far as it goes, where Path.resolve raises
            if key not in seen:  # a file given twice, or also inside a given folder, is restored once
                seen.add(key)
                out.append(p)
    return out


def _is_file(entry: os.DirEntry) -> bool:
    """A regular file (through links); an entry that cannot be followed (a symlink loop, a link to a folder
    it may not see) is passed over and the rest of its folder still counts."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def plan_outputs(files: list[Path], folders: list[Path], out: Path, overwrite: bool = False) -> list[Path]:
    """The PNG each of ``files`` is restored into, checked before anything is restored.

    Refuses an ``out`` that is a file, cannot be created or written, or is (inside) one of the input
    ``folders``; an output that would replace one of the inputs; and, unless ``overwrite``, any output that
    already exists. Two inputs with the same stem (``a.png``, ``a.jpg``) get ``a.png`` and ``a_1.png``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; give a folder for the restored images")
    check_folder_writable(out, "--out")
    target = Path(os.path.realpath(out))
    for d in folders:
        real = Path(os.path.realpath(d))
        if _within(target, real):
            where = "is the input folder" if target == real else "is inside the input folder"
            raise UserError(f"--out {out} {where} {d}; the restored images would mix with (or replace) the "
                            "originals; choose a folder outside it")
    originals = {Path(os.path.realpath(f)) for f in files}  # realpath: a symlink loop does not raise
    plan, used = [], set()
    for f in files:
        name, k = f"{f.stem}.png", 1
        while name in used:
            name, k = f"{f.stem}_{k}.png", k + 1
        used.add(name)
        dest = out / name
        if Path(os.path.realpath(dest)) in originals:
            raise UserError(f"restoring {f} into {out} would replace the input {dest}; choose another --out")
        if dest.is_dir():
            raise UserError(f"{dest} is a folder, where the restored {f.name} would go; choose another --out")
        plan.append(dest)
    if not overwrite:
        clash = next((p for p in plan if p.exists() or p.is_symlink()), None)
        if clash is not None:
            raise UserError(f"{clash} already exists; pass --overwrite to replace it, or choose another --out")
    return plan


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    s = list(range(0, length - tile, stride))
    return [*s, length - tile]


def _feather(tile: int, overlap_px: int) -> torch.Tensor:
    """Weights that fall linearly to near zero over the overlap, so neighbouring tiles cross-fade."""
    ramp = torch.ones(tile)
    if overlap_px > 0:
        edge = torch.linspace(1.0 / (overlap_px + 1), 1.0, overlap_px)
        ramp[:overlap_px], ramp[-overlap_px:] = edge, edge.flip(0)
    return ramp[:, None] * ramp[None, :]


class Restorer:
    def __init__(self, checkpoint: str | Path, options: RestoreOptions | None = None):
        self.opts = options or RestoreOptions()
        self.opts.validate()
        path = find_checkpoint(checkpoint)
        ck = load_checkpoint(path)
        missing = [c for c in ("vqvae", "transformer", "refiner") if c not in ck.get("components", {})]
        if missing:  # before the model is built: a file of one part must not cost the memory of all three
            raise UserError(f"{path} lacks {', '.join(missing)}; restoring needs the final checkpoint "
                            "(checkpoints/train_refiner.pt)")
        self.model = RestoreVAR(config_from_checkpoint(ck))
        load_components(self.model, ck, ["vqvae", "transformer", "refiner"], path)
        from restorevar.device import pick_device

        self.device = pick_device(self.opts.device)
        self.engine = Engine(self.model.to(self.device), PLAIN if self.opts.plain else fast(self.opts.dtype))
        self.size = self.model.cfg.vqvae.image_size
        self.checkpoint = path

    @torch.no_grad()
    def _restore_batch(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        out = []
        for b in range(0, x_B3HW.shape[0], self.opts.batch_size):
            chunk = x_B3HW[b:b + self.opts.batch_size].to(self.device)
            out.append(self.engine.restore(chunk, top_k=self.opts.top_k, top_p=self.opts.top_p,
                                           seed=self.opts.seed).image_B3HW.cpu())
        return torch.cat(out)

    def restore_image(self, img: Image.Image) -> Image.Image:
        if img.mode != "RGB":  # grey, palette or alpha images from callers that did not use read_image
            img = img.convert("RGB")
        if self.opts.mode == "resize":
            small = img.resize((self.size, self.size), Image.Resampling.LANCZOS)
            y = self._restore_batch(from_uint8(small)[None])[0]
            return to_pil(y).resize(img.size, Image.Resampling.BICUBIC)
        return to_pil(self._tiled(from_uint8(img)))

    def tile_boxes(self, height: int, width: int) -> list[tuple[int, int]]:
        """The top-left corners of the tiles that cover an image of this size (after padding to one tile)."""
        t = self.size
        stride = max(1, t - round(t * self.opts.overlap))
        return [(y, x) for y in _starts(max(height, t), t, stride) for x in _starts(max(width, t), t, stride)]

    def check_tiles(self, height: int, width: int, name: str) -> int:
        """The number of tiles an image needs; a UserError over ``max_tiles``, before any work."""
        n = len(self.tile_boxes(height, width))
        if n > self.opts.max_tiles:
            raise UserError(f"{name} ({width}x{height}) needs {n} tiles at --overlap {self.opts.overlap}, over the "
                            f"limit of {self.opts.max_tiles}; lower --overlap, use --mode resize, or pass "
                            f"--max-tiles {n}")
        return n

    def _tiled(self, x_3HW: torch.Tensor) -> torch.Tensor:
        """Tiles are cut, restored and blended one batch at a time: memory holds one batch, not the image's
        every tile."""
        t = self.size
        _, H, W = x_3HW.shape
        self.check_tiles(H, W, "the image")
        ph, pw = max(0, t - H), max(0, t - W)
        if ph or pw:  # reflect needs pad < size; replicate covers very small images
            x_3HW = F.pad(x_3HW[None], (0, pw, 0, ph), mode="reflect" if ph < H and pw < W else "replicate")[0]
        _, Hp, Wp = x_3HW.shape
        boxes = self.tile_boxes(H, W)
        w = _feather(t, round(t * self.opts.overlap))
        acc, norm = torch.zeros(3, Hp, Wp), torch.zeros(1, Hp, Wp)
        bs = self.opts.batch_size
        for b in range(0, len(boxes), bs):
            batch = boxes[b:b + bs]
            restored = self._restore_batch(torch.stack([x_3HW[:, y:y + t, x:x + t] for y, x in batch]))
            for (y, x), r in zip(batch, restored):
                acc[:, y:y + t, x:x + t] += r * w
                norm[:, y:y + t, x:x + t] += w
        return (acc / norm)[:, :H, :W]
