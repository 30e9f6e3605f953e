"""Image-quality metrics through pyiqa, with the protocol applied and weight availability checked first.

PSNR and SSIM need no weights. LPIPS (AlexNet), MUSIQ and CLIPIQA run only when their weights are in the
cache (``restorevar data fetch-weights``) and match their full published digests; otherwise they are
reported unavailable with the reason, never scored with anything else. pyiqa's recent releases are licensed
for non-commercial use only.

Weights are unpickled by ``restorevar.data.weights.load_verified`` alone: LPIPS is the lpips package's
network built without weights (torchvision's and pyiqa's loaders would unpickle with weights_only=False,
and pyiqa's AlexNet always fetches its backbone so), and MUSIQ is pyiqa's network built untrained. CLIP's
RN50 is a TorchScript archive that only pyiqa's CLIP loader reads; it reaches that loader only after its
full digest matched.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from restorevar.data import weights
from restorevar.data.weights import WeightRefused, default_cache, load_problem, load_verified, unavailable_reason
from restorevar.metrics.protocol import MetricProtocol

# lowfreq_psnr: low-frequency fidelity, the PSNR of the 8 x 8 area-average thumbnails (restorevar.imaging), always
# on RGB whatever the protocol's colour: it asks whether the colours and tones follow the image
FULL_REFERENCE = ("psnr", "ssim", "lpips", "lowfreq_psnr")
NO_REFERENCE = ("musiq", "clipiqa")
KNOWN = FULL_REFERENCE + NO_REFERENCE
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "lowfreq_psnr": True, "musiq": True, "clipiqa": True}
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
                try:
                    self._metrics[n] = self._build(n)
                except WeightRefused as e:  # on loading: not plain tensors, not fitting, or changed since hashed
                    self.available[n] = (False, unavailable_reason([(e.spec.name, e.reason)], self.cache))

    def _check_weights(self, name: str) -> tuple[bool, str]:
        """Every file the metric needs is present *and* matches its full published digest."""
        problems = [(spec.name, why) for spec in weights.WEIGHTS if name in spec.needed_by
                    for why in [load_problem(spec, self.cache)] if why]
        return (True, "available") if not problems else (False, unavailable_reason(problems, self.cache))

    def _build(self, name: str):
        if name == "ssim" and self.protocol.convention == "official":
            return SkimageSSIM(self.protocol.crop_border, self.protocol.colour == "y")
        if name == "lpips":
            return _LpipsMetric(lpips_alex(self.cache)).to(self.device).eval()
        if name == "lowfreq_psnr":
            return _LowFreqPSNR()
        pyiqa = _pyiqa()
        y = self.protocol.colour == "y"
        kwargs: dict = {}
        if name in ("psnr", "ssim"):  # BT.601 luma as BasicSR; pyiqa's own default is YIQ
            kwargs = {"test_y_channel": y, "crop_border": self.protocol.crop_border, "color_space": "ycbcr"}
        elif name == "musiq":  # built untrained (same shapes as pyiqa's KonIQ model), the weights loaded below
            kwargs = {"pretrained": False, "pretrained_model_path": None}
        with _torch_home(self.cache), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metric = pyiqa.create_metric(name, device=self.device, as_loss=False, **kwargs)
        if name == "musiq":
            state = load_verified(weights.BY_NAME["musiq_koniq"], self.cache)
            # what pyiqa's own loader does after unpickling: drop DataParallel's prefix, load strictly
            state = {k.removeprefix("module."): v for k, v in state.items()}
            _load_strict(metric.net, state, weights.BY_NAME["musiq_koniq"], self.cache)
        return metric.eval()

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
            else:  # the official scores its saved 8-bit files
                v = metric(pred if self.protocol.convention == "basicsr" else (pred * 255).round() / 255)
            out[name] = v.detach().reshape(-1).double().cpu().numpy()
        return out


class _LowFreqPSNR(torch.nn.Module):
    """Per-image low-frequency fidelity of images in [0, 1] (restorevar.imaging's one definition)."""

    def forward(self, pred_B3HW: torch.Tensor, target_B3HW: torch.Tensor) -> torch.Tensor:
        from restorevar.imaging import lowfreq_psnr_per_image

        return lowfreq_psnr_per_image(pred_B3HW * 2 - 1, target_B3HW * 2 - 1)


class SkimageSSIM(torch.nn.Module):
    """SSIM per image as ``skimage.metrics.structural_similarity(a, b, data_range=1, channel_axis=2)`` gives it,
    the official evaluation's call: a 7x7 uniform window, sample covariance (N / (N - 1)), K1 0.01, K2 0.03,
    averaged over the pixels where the window fits and over the channels; float64, no 8-bit rounding."""

    win = 7

    def __init__(self, crop_border: int = 0, y_channel: bool = False):
        super().__init__()
        self.crop_border, self.y_channel = crop_border, y_channel

    def forward(self, x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        if x_B3HW.shape != y_B3HW.shape:
            raise ValueError(f"SSIM of differently shaped images: {tuple(x_B3HW.shape)} vs {tuple(y_B3HW.shape)}")
        c = self.crop_border
        if c:
            x_B3HW, y_B3HW = x_B3HW[..., c:-c, c:-c], y_B3HW[..., c:-c, c:-c]
        if min(x_B3HW.shape[-2:]) < self.win:
            raise ValueError(f"SSIM needs images of at least {self.win} px, got {tuple(x_B3HW.shape[-2:])}")
        if self.y_channel:
            from pyiqa.utils.color_util import to_y_channel

            x_B3HW, y_B3HW = (to_y_channel(t, 1.0, "ycbcr") for t in (x_B3HW, y_B3HW))
        x, y = x_B3HW.double(), y_B3HW.double()

        def mean(t: torch.Tensor) -> torch.Tensor:  # the window's mean, only where it fits (skimage crops the rest)
            return F.avg_pool2d(t, self.win, stride=1)

        n = self.win**2
        mx, my = mean(x), mean(y)
        vx = (mean(x * x) - mx * mx) * n / (n - 1)
        vy = (mean(y * y) - my * my) * n / (n - 1)
        vxy = (mean(x * y) - mx * my) * n / (n - 1)
        c1, c2 = 0.01**2, 0.03**2
        s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        return s.flatten(1).mean(1)


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], spec, cache: Path) -> None:
    """``load_state_dict(strict=True)``, with a file that does not fit refused like any other bad file."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:])[:300] or "keys or shapes differ"
        raise WeightRefused(spec, cache / spec.relpath, f"refused: does not fit the network ({detail})",
                            f"delete it and run `restorevar data fetch-weights --cache {cache}`") from None


def lpips_alex(cache: Path | None = None) -> torch.nn.Module:
    """LPIPS v0.1 with AlexNet from the lpips package, its backbone and linear layers from verified files.

    ``lpips.LPIPS(pretrained=False, pnet_rand=True)`` builds the network without reading any file (its
    defaults would unpickle torchvision's AlexNet from $TORCH_HOME and its own linear layers, both with
    weights_only=False); the two state dicts then come from ``load_verified``. Raises ``WeightRefused``.
    """
    cache = Path(cache) if cache else default_cache()
    backbone = load_verified(weights.BY_NAME["alexnet"], cache)
    linear = load_verified(weights.BY_NAME["lpips_alex"], cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation note for the pretrained=False that lpips passes
        import lpips

        net = lpips.LPIPS(pretrained=False, net="alex", version="0.1", pnet_rand=True, verbose=False)
    # torchvision names the layers features.<i>; lpips keeps the same modules in slices, under the same <i>
    where = {index: slice_name for slice_name, block in net.net.named_children()
             for index, _ in block.named_children()}
    feats = {}
    for key, value in backbone.items():
        if key.startswith("classifier."):  # the classifier head: not part of LPIPS
            continue
        layer = key.split(".")[1] if key.startswith("features.") else None
        if layer not in where:
            feats[key] = value  # not an AlexNet feature layer: load_state_dict names it and the file is refused
            continue
        feats[f"{where[layer]}.{key.split('.', 1)[1]}"] = value
    _load_strict(net.net, feats, weights.BY_NAME["alexnet"], cache)
    lins = {}
    for key, value in linear.items():
        head, _, rest = key.partition(".")
        lins.setdefault(head, {})[rest] = value
    expected = [f"lin{k}" for k in range(len(net.chns))]
    if sorted(lins) != expected:
        raise WeightRefused(weights.BY_NAME["lpips_alex"], cache / weights.BY_NAME["lpips_alex"].relpath,
                            f"refused: does not fit the network (holds {', '.join(sorted(lins)) or 'nothing'}, "
                            f"expected {', '.join(expected)})",
                            f"delete it and run `restorevar data fetch-weights --cache {cache}`")
    for head, sd in lins.items():
        _load_strict(getattr(net, head), sd, weights.BY_NAME["lpips_alex"], cache)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


class _LpipsMetric(torch.nn.Module):
    """Per-image LPIPS of images in [0, 1], as pyiqa's ``lpips`` metric computes it."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, pred_B3HW: torch.Tensor, target_B3HW: torch.Tensor) -> torch.Tensor:
        # deterministic cuDNN, as pyiqa's metric wrapper runs every network
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
            return self.net(pred_B3HW, target_B3HW, normalize=True)
