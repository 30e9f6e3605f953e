"""Image math (restorevar.imaging) and reading images as they are (restorevar.fileio.read_image)."""
import math
import os
import struct
import threading
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from restorevar.fileio import DEFAULT_MAX_PIXELS, ImageReadError, ImageTooLargeError, read_image
from restorevar.imaging import (
    from_uint8,
    from_uint8_batch,
    mean_psnr,
    pooled_psnr,
    psnr_per_image,
    to_pil,
    to_uint8,
)


def png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA), which PIL can read but not write."""
    h, w = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    return _png(w, h, 16, colour_type, zlib.compress(raw))


def _png(w: int, h: int, depth: int, colour_type: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------------------
# uint8 <-> [-1, 1]
# ------------------------------------------------------------------------------------------------
def test_every_uint8_level_survives_the_round_trip():
    levels = np.arange(256, dtype=np.uint8)
    img = np.stack([levels, levels[::-1], np.roll(levels, 7)], -1).reshape(16, 16, 3)
    x = from_uint8(img)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert np.array_equal(to_uint8(x), img)
    assert np.array_equal(np.asarray(to_pil(x)), img)
    batch = np.stack([img, img[::-1]])
    xb = from_uint8_batch(batch)
    assert xb.shape == (2, 3, 16, 16) and torch.equal(xb[1], from_uint8(img[::-1].copy()))
    assert np.array_equal(to_uint8(xb), batch)


def test_to_uint8_clamps_and_rounds():
    x = torch.tensor([-3.0, -1.0, 1 / 127.5 - 1 + 0.3 / 127.5, 0.0, 1.0, 7.0]).view(1, 1, 6).expand(3, 1, 6)
    assert to_uint8(x)[0, :, 0].tolist() == [0, 0, 1, 128, 255, 255]  # 127.5 rounds half to even: 128


def test_from_uint8_refuses_other_dtypes():
    with pytest.raises(TypeError, match="uint8"):
        from_uint8(np.zeros((4, 4, 3), np.uint16))


# ------------------------------------------------------------------------------------------------
# PSNR
# ------------------------------------------------------------------------------------------------
def test_psnr_of_a_known_mse():
    a = torch.zeros(2, 3, 8, 8)
    b = a.clone()
    b[0] += 0.25  # 1/8 on the [0, 1] scale everywhere (exact in binary): MSE 1/64
    b[1, :, :4] -= 2**-5  # 1/64 on half the pixels: MSE 2**-13
    got = psnr_per_image(b, a)
    assert got.dtype == torch.float64 and got.shape == (2,)
    assert got[0].item() == pytest.approx(10 * math.log10(64), abs=1e-9)
    assert got[1].item() == pytest.approx(10 * math.log10(2**13), abs=1e-9)
    assert mean_psnr(b, a) == pytest.approx(5 * (math.log10(64) + math.log10(2**13)), abs=1e-9)
    assert pooled_psnr(b, a) == pytest.approx(10 * math.log10(2 / (1 / 64 + 2**-13)), abs=1e-9)


def test_identical_images_are_infinite_not_clipped():
    a = torch.rand(3, 3, 5, 5) * 2 - 1
    assert torch.isinf(psnr_per_image(a, a.clone())).all()
    assert math.isinf(mean_psnr(a, a.clone())) and math.isinf(pooled_psnr(a, a.clone()))
    b = a.clone()
    b[1] = -b[1]
    assert math.isinf(mean_psnr(a, b))  # one identical pair makes the mean infinite...
    assert math.isfinite(pooled_psnr(a, b))  # ...but not the batch taken as one signal


def test_psnr_clamps_to_the_valid_range_and_checks_shapes():
    a = torch.zeros(1, 3, 4, 4)
    assert psnr_per_image(a + 5, a + 1).isinf().all()  # both clamp to 1
    with pytest.raises(ValueError, match="differently shaped"):
        psnr_per_image(a, torch.zeros(1, 3, 4, 5))


def test_psnr_agrees_with_pyiqa():
    import pyiqa  # a dependency of the package: its metrics are the paper's
    metric = pyiqa.create_metric("psnr", test_y_channel=False, device="cpu")  # no weights: works offline
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 3, 48, 40, generator=g) * 2 - 1
    b = torch.rand(4, 3, 48, 40, generator=g) * 2 - 1
    noisy = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(-1, 1)  # about 26 dB
    for x in (b, noisy):
        ours = psnr_per_image(x, a)
        theirs = metric((x + 1) / 2, (a + 1) / 2).double().flatten()
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max().item() < 1e-4, (ours, theirs)


# ------------------------------------------------------------------------------------------------
# read_image: images as they are
# ------------------------------------------------------------------------------------------------
def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 257, 257 * 100, 40000, 65535]], np.uint16)
    (tmp_path / "g16.png").write_bytes(png16(levels))
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    out = np.asarray(read_image(tmp_path / "g16.png"))
    assert out.shape == (1, 5, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 1, 100, round(40000 / 257), 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_16_bit_rgb_png_keeps_its_range(tmp_path):
    v = np.array([0, 257 * 50, 257 * 200, 65535], np.uint16)
    rgb = np.stack([v, v[::-1], np.full(4, 257 * 128, np.uint16)], -1)[None]
    (tmp_path / "c16.png").write_bytes(png16(rgb))
    out = np.asarray(read_image(tmp_path / "c16.png")).astype(int)
    assert np.abs(out - np.round(rgb / 257)).max() <= 1  # PIL keeps the high byte: off by one at most


def test_32_bit_integer_image_is_read_as_16_bit(tmp_path):
    a = np.array([[0, 65535, 70000, -5, 257 * 9]], np.int32)
    Image.fromarray(a, "I").save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    assert np.asarray(read_image(tmp_path / "i.tif"))[0, :, 1].tolist() == [0, 255, 255, 0, 9]


@pytest.mark.parametrize(("values", "expected"), [
    ([0.0, 0.25, 0.5, 1.0], [0, 64, 128, 255]),  # max <= 1: the [0, 1] convention
    ([0.0, 2.0, 100.4, 300.0], [0, 2, 100, 255]),  # beyond 1: already [0, 255], clipped
    ([-0.5, float("nan"), 0.5, float("inf")], [0, 0, 128, 255]),  # inf is not a finite max
])
def test_float_tiff_by_its_range(tmp_path, values, expected):
    Image.fromarray(np.array([values], np.float32), "F").save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    assert np.asarray(read_image(tmp_path / "f.tif"))[0, :, 0].tolist() == expected


def test_grey_palette_and_alpha_images_become_rgb(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    assert np.array_equal(np.asarray(read_image(tmp_path / "l.png")), np.repeat(grey[..., None], 3, -1))
    rgba = np.concatenate([rgb, rng.integers(0, 256, (6, 7, 1), dtype=np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(np.asarray(read_image(tmp_path / "a.png")), rgb)  # alpha dropped, colours kept
    pal = Image.fromarray(rgb).quantize(8)
    pal.save(tmp_path / "p.png", transparency=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL warns about palette transparency when converted straight to RGB
        got = np.asarray(read_image(tmp_path / "p.png"))
    assert np.array_equal(got, np.asarray(pal.convert("RGB")))


def test_exif_orientation_is_applied_only_when_asked(tmp_path):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (10, 30, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "phone.png", exif=exif)
    assert read_image(tmp_path / "phone.png").size == (30, 10)
    turned = read_image(tmp_path / "phone.png", exif_orientation=True)
    assert turned.size == (10, 30)
    assert np.array_equal(np.asarray(turned), np.asarray(img.transpose(Image.Transpose.ROTATE_270)))


def test_the_pixel_cap_is_read_from_the_header_before_decoding(tmp_path):
    # a header declaring 12000x12000 over a few bytes of data: decoding it would fail differently
    (tmp_path / "huge.png").write_bytes(_png(12000, 12000, 8, 2, zlib.compress(b"\x00" * 100)))
    with pytest.raises(ImageTooLargeError, match=r"12000x12000 \(144\.0 megapixels\), over the limit") as e:
        read_image(tmp_path / "huge.png")
    assert e.value.pixels == 144_000_000 and e.value.limit == DEFAULT_MAX_PIXELS
    with pytest.raises(ImageReadError, match="cannot decode"):  # allowed: now it is decoded, and is truncated
        read_image(tmp_path / "huge.png", max_pixels=None)


def test_the_cap_can_be_raised_and_replaces_pils_own_guard(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(ImageTooLargeError):
        read_image(tmp_path / "x.png", max_pixels=9999)
    assert read_image(tmp_path / "x.png", max_pixels=10_000).size == (100, 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL would refuse 10000 pixels (> 2 x 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(tmp_path / "x.png", max_pixels=None).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == 1000  # put back


def _finishes(fn, seconds: float = 10.0):
    result: dict = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            result["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "blocked"
    return result


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    r = _finishes(lambda: read_image(tmp_path / "pipe.png"))
    assert isinstance(r.get("error"), ImageReadError) and "not a regular file" in str(r["error"])


def test_folders_and_missing_files_are_named(tmp_path):
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageReadError, match="is a folder"):
        read_image(tmp_path / "dir.png")
    with pytest.raises(ImageReadError, match="image not found"):
        read_image(tmp_path / "nope.png")
