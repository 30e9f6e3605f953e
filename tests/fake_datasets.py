"""Fake dataset trees with each real dataset's layout (shared by the adapter tests and the profile smoke tests)."""
import zlib

import numpy as np
from PIL import Image

TINY = (16, 12)
# typical image sizes (width, height) of the real datasets, for trees that exercise real resizing and cropping
REAL_SIZES = {"RESIDE": (550, 413), "Snow100K": (640, 480), "Rain13K": (481, 321), "LOLv1": (600, 400),
              "GoPro": (1280, 720), "LHP": (1920, 1080), "REVIDE": (2708, 1800), "TOLED": (2048, 1024),
              "POLED": (2048, 1024), "CDD": (1080, 720), "LOLBlur": (1120, 640)}


def _img(path, seed=0, size=TINY):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    # smooth content plus noise: a photograph-like spectrum, cheap to write at any size
    base = rng.integers(0, 255, (max(h // 32, 2), max(w // 32, 2), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR), dtype=np.int16)
    img = np.clip(img + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)


def _pairs(root, inp, gt, names, gt_names=None, size=TINY):
    # seeded by the folder, so no two folders hold the same picture (a train/test repeat is a finding)
    base = zlib.crc32(inp.encode()) % 10_000
    for i, n in enumerate(names):
        _img(root / inp / n, base + i, size)
        _img(root / gt / (gt_names[i] if gt_names else n), base + 100 + i, size)


def build_reside(r, size=TINY):
    _pairs(r, "OTS/hazy/part1", "OTS/clear", ["0001_0.8_0.2.jpg", "0002_1_0.16.jpg"], ["0001.jpg", "0002.jpg"], size=size)
    _pairs(r, "SOTS/outdoor/hazy", "SOTS/outdoor/gt", ["0005_0.9_0.2.jpg"], ["0005.png"], size=size)
    return {"train": 2, "test": 1}


def build_snow100k(r, size=TINY):
    _pairs(r, "all/synthetic", "all/gt", ["a.jpg", "b.jpg"], size=size)
    _pairs(r, "media/jdway/GameSSD/overlapping/test/Snow100K-L/synthetic",
           "media/jdway/GameSSD/overlapping/test/Snow100K-L/gt", ["c.jpg"])
    _pairs(r, "media/jdway/GameSSD/overlapping/test/Snow100K-S/synthetic",
           "media/jdway/GameSSD/overlapping/test/Snow100K-S/gt", ["s.jpg"])  # not the heavy subset: ignored
    return {"train": 2, "test": 1}


def build_rain13k(r, size=TINY):
    _pairs(r, "train/input", "train/target", ["1.jpg", "2.jpg", "3.jpg"], size=size)
    for name in ("Rain100H", "Rain100L", "Test100", "Test1200", "Test2800"):
        _pairs(r, f"test/{name}/input", f"test/{name}/target", ["1.png"], size=size)
    return {"train": 3, "test": 5}


def build_lolv1(r, size=TINY):
    _pairs(r, "lol_dataset/our485/low", "lol_dataset/our485/high", ["2.png", "5.png"], size=size)
    _pairs(r, "lol_dataset/eval15/low", "lol_dataset/eval15/high", ["1.png"], size=size)
    return {"train": 2, "test": 1}


def build_gopro(r, size=TINY):
    for split, seqs in (("train", ["GOPR0372_07_00", "GOPR0374_11_00"]), ("test", ["GOPR0384_11_00"])):
        for s in seqs:
            _pairs(r, f"GOPRO_Large/{split}/{s}/blur", f"GOPRO_Large/{split}/{s}/sharp", ["000047.png", "000048.png"], size=size)
            _pairs(r, f"GOPRO_Large/{split}/{s}/blur_gamma", f"GOPRO_Large/{split}/{s}/sharp", ["000047.png"], size=size)
    return {"train": 4, "test": 2}


def build_lhp(r, size=TINY):
    _pairs(r, "LHP-Rain/test/input", "LHP-Rain/test/gt", ["x.png", "y.png"], size=size)
    return {"test": 2}


def build_revide(r, size=TINY):
    _pairs(r, "REVIDE_indoor/Test/hazy/C005", "REVIDE_indoor/Test/gt/C005", ["00001.JPG", "00002.JPG"], size=size)
    _pairs(r, "REVIDE_indoor/Train/hazy/A001", "REVIDE_indoor/Train/gt/A001", ["00001.JPG"], size=size)
    return {"test": 2}


def _udc(r, track, size=None):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    r.mkdir(parents=True, exist_ok=True)
    shape = (3, 8, 8, 3) if size is None else (1, size[1], size[0], 3)
    savemat(r / f"{track}_test_display.mat", {"test_display": rng.integers(0, 255, shape, dtype=np.uint8)})
    savemat(r / f"{track}_test_gt.mat", {"test_gt": rng.integers(0, 255, shape, dtype=np.uint8)})
    return {"test": shape[0]}


def build_cdd(r, size=TINY):
    _pairs(r, "CDD-11_test/haze_rain", "CDD-11_test/clear", ["000001.png", "000002.png"], size=size)
    _pairs(r, "CDD-11_test/low_snow", "CDD-11_test/clear", ["000001.png"], size=size)
    return {"test": 2}


def build_lolblur(r, size=TINY):
    _pairs(r, "LOLBlur/test/low_blur_noise/0012", "LOLBlur/test/high_sharp_scaled/0012", ["0000.png", "0001.png"], size=size)
    _pairs(r, "LOLBlur/test/low_blur/0012", "LOLBlur/test/high_sharp_scaled/0012", ["0000.png"], size=size)
    return {"test": 2}


BUILDERS = {"RESIDE": build_reside, "Snow100K": build_snow100k, "Rain13K": build_rain13k, "LOLv1": build_lolv1,
            "GoPro": build_gopro, "LHP": build_lhp, "REVIDE": build_revide,
            "TOLED": lambda r, size=None: _udc(r, "toled", size), "POLED": lambda r, size=None: _udc(r, "poled", size),
            "CDD": build_cdd, "LOLBlur": build_lolblur}




def build_all(root, names, real=False):
    """Fake trees of ``names`` under ``root``, at the real datasets' typical sizes when ``real``."""
    for name in names:
        BUILDERS[name](root / name, **({"size": REAL_SIZES[name]} if real else {}))
