"""The torch device a user's ``device`` setting names, and the device-wide switches every stage shares."""
from __future__ import annotations

import torch

from restorevar.errors import UserError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def pick_device(name: str) -> torch.device:
    """The torch device for a user's ``device`` setting; an unknown or unavailable one raises UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"unknown device {name!r}; use {DEVICE_CHOICES}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name} was asked for but no GPU is visible; use device auto or cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise UserError(f"device {name} was asked for but only {n} GPU(s) are visible (cuda:0 to cuda:{n - 1})")
        return dev
    if dev.type == "mps" and torch.backends.mps.is_available():  # Apple GPUs, where torch has them
        return dev
    # torch knows more device types (xla, meta, ...); the engine and trainers are built for CPU and CUDA
    raise UserError(f"unsupported device {name!r}; use {DEVICE_CHOICES}")


def set_tf32(dev: torch.device, on: bool) -> bool:
    """TF32 for fp32 matmuls and convolutions on CUDA, as the official code sets it; whether it is on."""
    if dev.type != "cuda":
        return False
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    torch.set_float32_matmul_precision("high" if on else "highest")
    return on
