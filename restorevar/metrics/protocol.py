"""How a number was measured. Every per-image row carries its protocol id, and tables never mix ids.

Conventions follow BasicSR's explicit ones: ``colour`` 'rgb' or 'y' (ITU-R BT.601 luma, as in
``test_y_channel``) and ``crop_border`` pixels dropped from each side; both apply to PSNR and SSIM. LPIPS and
the no-reference metrics always see the whole RGB image. ``geometry`` says how a test image reached the
model's ``size``: 'resize' (Lanczos, the paper's protocol) or 'center_crop'.

``convention`` 'basicsr' computes SSIM as pyiqa and MATLAB do (an 11x11 Gaussian window, sigma 1.5, on
8-bit-rounded values) and scores the no-reference metrics on the float output. 'official' follows the
official RestoreVAR evaluation, for numbers comparable with its tables: SSIM with scikit-image's defaults
(a 7x7 uniform window, sample covariance, on float values in [0, 1]) and MUSIQ/CLIPIQA on the output as
its saved 8-bit file holds it. PSNR is the same under both (float, data range 1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass
class MetricProtocol:
    colour: Literal["rgb", "y"] = "rgb"
    crop_border: int = 0
    geometry: Literal["resize", "center_crop"] = "resize"
    size: int = 0  # the model's input size; filled in from the checkpoint
    convention: Literal["basicsr", "official"] = "basicsr"

    def validate(self) -> None:
        if self.crop_border < 0:
            raise ValueError(f"crop_border must be >= 0, got {self.crop_border}")
        if self.convention not in ("basicsr", "official"):
            raise ValueError(f"convention must be basicsr or official, got {self.convention!r}")
        if self.size and 2 * self.crop_border >= self.size:
            raise ValueError(f"crop_border {self.crop_border} leaves nothing of a {self.size} px image")

    @property
    def id(self) -> str:
        base = f"{self.colour}-crop{self.crop_border}-{self.geometry}{self.size}"
        return base if self.convention == "basicsr" else f"{base}-official"

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, **asdict(self), "range": "[0, 1] float",
                "psnr_ssim": f"{'Y (BT.601)' if self.colour == 'y' else 'RGB'}, crop border {self.crop_border} px",
                "lpips": "AlexNet, RGB in [-1, 1], whole image",
                "ssim": ("Gaussian window 11, sigma 1.5, on 8-bit-rounded values (pyiqa, as MATLAB)"
                         if self.convention == "basicsr" else
                         "uniform window 7, sample covariance, on float values (scikit-image's defaults)"),
                "no_reference": "on the float output" if self.convention == "basicsr" else "on the 8-bit output"}
