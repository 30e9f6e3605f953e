"""Seeded synthetic degradations; each returns the degraded image and the parameters it drew.

Albumentations supplies rain, snow and linear motion blur; haze (the atmospheric scattering model),
low light (gamma/scale darkening with shot and read noise) and trajectory blur kernels are written here
because no well-kept library has them in this form. Every function takes HxWx3 uint8 RGB and a NumPy
Generator, and is deterministic given that generator's state.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations calls the network at import otherwise

import albumentations as A
import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

Degrade = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, dict[str, Any]]]


def _f(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def _albu(transform, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    seed = int(rng.integers(0, 2**31 - 1))
    out = A.Compose([transform], seed=seed, save_applied_params=True)(image=img)
    applied = out["applied_transforms"][0][1] if out["applied_transforms"] else {}
    params = {k: _jsonable(v) for k, v in applied.items() if k != "shape" and _jsonable(v) is not None}
    params["albumentations_seed"] = seed
    return out["image"], params


def _jsonable(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if isinstance(v, (tuple, list)) and all(isinstance(x, (int, float, np.integer, np.floating)) for x in v):
        return [float(x) for x in v]
    return None  # arrays (drop positions, kernels) are reproducible from the seed; not stored


# ------------------------------------------------------------------------------------------------
# Haze
# ------------------------------------------------------------------------------------------------
def depth_proxy(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth depth map in [0, 1]: farther towards the top (a horizon prior) plus low-frequency noise."""
    rows = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    noise = gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), sigma=max(h, w) / 8)
    noise = (noise - noise.min()) / (np.ptp(noise) + 1e-8)
    d = 0.7 * rows + 0.3 * noise
    return (d - d.min()) / (np.ptp(d) + 1e-8)


def haze(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """I = J t + A (1 - t), t = exp(-beta d)."""
    beta = float(rng.uniform(1.0, 2.5))
    airlight = float(rng.uniform(0.7, 0.95))
    tint = rng.uniform(-0.03, 0.03, size=3).astype(np.float32)
    d = depth_proxy(*img.shape[:2], rng)
    t = np.exp(-beta * d)[..., None]
    A_rgb = np.clip(airlight + tint, 0, 1)
    out = _f(img) * t + A_rgb * (1 - t)
    return _u8(out), {"beta": beta, "airlight": [float(a) for a in A_rgb], "mean_transmission": float(t.mean())}


# ------------------------------------------------------------------------------------------------
# Rain, snow (albumentations)
# ------------------------------------------------------------------------------------------------
def rain(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    rain_type = str(rng.choice(["drizzle", "heavy", "torrential"]))
    h = img.shape[0]
    t = A.RandomRain(slant_range=(-15, 15), drop_length=max(4, h // 8), drop_width=1, blur_value=3,
                     brightness_coefficient=0.8, rain_type=rain_type, p=1.0)
    out, params = _albu(t, img, rng)
    params["rain_type"] = rain_type
    return out, params


def snow(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    method = str(rng.choice(["bleach", "texture"]))
    t = A.RandomSnow(snow_point_range=(0.2, 0.45), brightness_coeff=2.0, method=method, p=1.0)
    out, params = _albu(t, img, rng)
    params["method"] = method
    return out, params


# ------------------------------------------------------------------------------------------------
# Low light
# ------------------------------------------------------------------------------------------------
def lowlight(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Gamma then scale darkening, then Poisson shot noise and Gaussian read noise."""
    gamma = float(rng.uniform(1.5, 3.0))
    scale = float(rng.uniform(0.1, 0.35))
    peak = float(rng.uniform(30.0, 120.0))  # photons at full scale: lower is noisier
    read_sigma = float(rng.uniform(0.002, 0.01))
    dark = scale * _f(img) ** gamma
    noisy = rng.poisson(dark * peak).astype(np.float32) / peak + rng.normal(0, read_sigma, dark.shape)
    return _u8(noisy), {"gamma": gamma, "scale": scale, "peak_photons": peak, "read_sigma": read_sigma}


# ------------------------------------------------------------------------------------------------
# Motion blur
# ------------------------------------------------------------------------------------------------
def trajectory_kernel(size: int, rng: np.random.Generator, steps: int = 64) -> np.ndarray:
    """A camera-shake kernel: a random walk with inertia, rasterised with bilinear splatting."""
    pos = np.zeros(2)
    vel = rng.normal(size=2)
    vel /= np.linalg.norm(vel) + 1e-8
    pts = []
    for _ in range(steps):
        vel = 0.85 * vel + 0.35 * rng.normal(size=2)
        vel /= np.linalg.norm(vel) + 1e-8
        pos = pos + vel
        pts.append(pos.copy())
    pts = np.array(pts)
    pts -= pts.mean(0)
    extent = np.abs(pts).max() + 1e-8
    pts = pts / extent * (size - 1) / 2 + (size - 1) / 2
    k = np.zeros((size, size), np.float64)
    for y, x in pts:
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        dy, dx = y - y0, x - x0
        for yy, xx, w in ((y0, x0, (1 - dy) * (1 - dx)), (y0 + 1, x0, dy * (1 - dx)),
                          (y0, x0 + 1, (1 - dy) * dx), (y0 + 1, x0 + 1, dy * dx)):
            if 0 <= yy < size and 0 <= xx < size:
                k[yy, xx] += w
    return (k / k.sum()).astype(np.float32)


def motion_blur(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    size = int(max(5, round(img.shape[0] * rng.uniform(0.06, 0.12)))) | 1  # odd, relative to the image
    if rng.random() < 0.5:
        t = A.MotionBlur(blur_limit=(size, size), allow_shifted=False, p=1.0)
        out, params = _albu(t, img, rng)
        params.update(kernel="linear", kernel_size=size)
        return out, params
    k = trajectory_kernel(size, rng)
    out = cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT)
    return out, {"kernel": "trajectory", "kernel_size": size}


# ------------------------------------------------------------------------------------------------
# Mixtures (held out from training: the generalisation study)
# ------------------------------------------------------------------------------------------------
def haze_rain(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Like CDD's haze + rain composites."""
    a, pa = haze(img, rng)
    b, pb = rain(a, rng)
    return b, {"haze": pa, "rain": pb}


def lowlight_blur(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Like LOLBlur: blur first (it happens during exposure), then darkening and sensor noise."""
    a, pa = motion_blur(img, rng)
    b, pb = lowlight(a, rng)
    return b, {"motion_blur": pa, "lowlight": pb}


# name -> (function, reference class id, used in training?)
DEGRADATIONS: dict[str, tuple[Degrade, int, bool]] = {
    "haze": (haze, 1, True),
    "rain": (rain, 2, True),
    "snow": (snow, 3, True),
    "lowlight": (lowlight, 4, True),
    "motion_blur": (motion_blur, 5, True),
    "haze_rain": (haze_rain, 6, False),
    "lowlight_blur": (lowlight_blur, 6, False),
}
