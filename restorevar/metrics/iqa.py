"""Image-quality metrics through pyiqa, with the protocol applied and weight availability checked first.

PSNR and SSIM need no weights. LPIPS (AlexNet), MUSIQ and CLIPIQA run only when their weights are in the
cache (``restorevar data fetch-weights``); otherwise they are reported unavailable with the reason, never
scored with anything else. pyiqa's recent releases are licensed for non-commercial use only.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from restorevar.data.weights import WEIGHTS, default_cache, verify
from restorevar.metrics.protocol import MetricProtocol

FULL_REFERENCE = ("psnr", "ssim", "lpips")
NO_REFERENCE = ("musiq", "clipiqa")
KNOWN = FULL_REFERENCE + NO_REFERENCE
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "musiq": True, "clipiqa": True}
NEEDS_WEIGHTS = {"lpips", "musiq", "clipiqa"}


@contextlib.contextmanager
def _torch_home(cache: Path) -> Iterator[None]:
    """pyiqa and torchvision look for weights under $TORCH_HOME; point it at our cache while building."""
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(cache)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = old


def _pyiqa():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyiqa imports emit deprecation noise from its dependencies
        import pyiqa
    return pyiqa


class MetricSuite:
    """``names`` from KNOWN. ``available[name]`` is ``(ok, reason)``; only available metrics are computed."""

    def __init__(self, names: list[str], protocol: MetricProtocol, device: torch.device | str = "cpu",
                 weights_cache: Path | None = None):
        unknown = [n for n in names if n not in KNOWN]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; known: {', '.join(KNOWN)}")
        protocol.validate()
        self.protocol, self.device = protocol, torch.device(device)
        self.cache = Path(weights_cache) if weights_cache else default_cache()
        self.available = {n: self._check_weights(n) if n in NEEDS_WEIGHTS else (True, "available") for n in names}
        self._metrics = {}
        for n in names:
            if self.available[n][0]:
                self._metrics[n] = self._build(n)

    def _check_weights(self, name: str) -> tuple[bool, str]:
        """Every file the metric needs is present *and* matches its published digest: pyiqa unpickles
        these files, so only known files may reach it."""
        problems = []
        for spec in WEIGHTS:
            if name in spec.needed_by:
                why = verify(spec, self.cache / spec.relpath)
                if why:
                    problems.append(f"{spec.name} {why}")
        if not problems:
            return True, "available"
        return False, (f"unavailable: weights not cached ({'; '.join(problems)}); "
                       f"run `restorevar data fetch-weights --cache {self.cache}`")

    def _path(self, weight: str) -> str:
        return str(self.cache / next(w for w in WEIGHTS if w.name == weight).relpath)

    def _build(self, name: str):
        pyiqa = _pyiqa()
        y = self.protocol.colour == "y"
        kwargs: dict = {}
        if name in ("psnr", "ssim"):  # BT.601 luma as BasicSR; pyiqa's own default is YIQ
            kwargs = {"test_y_channel": y, "crop_border": self.protocol.crop_border, "color_space": "ycbcr"}
        elif name == "lpips":  # explicit paths: pyiqa fixes its cache folder when first imported
            kwargs = {"pretrained_model_path": self._path("lpips_alex")}
        elif name == "musiq":
            kwargs = {"pretrained_model_path": self._path("musiq_koniq")}
        with _torch_home(self.cache), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pyiqa.create_metric(name, device=self.device, as_loss=False, **kwargs).eval()

    @property
    def computed(self) -> list[str]:
        return list(self._metrics)

    @torch.no_grad()
    def score(self, pred_B3HW: torch.Tensor, target_B3HW: torch.Tensor | None) -> dict[str, np.ndarray]:
        """Per-image values for images in [0, 1]; full-reference metrics are skipped without a target."""
        pred = pred_B3HW.clamp(0, 1).to(self.device, torch.float32)
        tgt = None if target_B3HW is None else target_B3HW.clamp(0, 1).to(self.device, torch.float32)
        out = {}
        for name, metric in self._metrics.items():
            if name in FULL_REFERENCE:
                if tgt is None:
                    continue
                v = metric(pred, tgt)
            else:
                v = metric(pred)
            out[name] = v.detach().reshape(-1).double().cpu().numpy()
        return out
