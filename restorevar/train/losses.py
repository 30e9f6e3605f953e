"""Image losses: SSIM (pytorch-msssim), LPIPS (lpips package, when its verified weights are cached), hinge GAN."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

from restorevar.errors import UserError


def ssim_loss(x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
    """1 - SSIM on images in [-1, 1]; the window shrinks for small crops so it always fits."""
    win = 11 if min(x_B3HW.shape[-2:]) >= 11 else 3
    return 1 - ssim((x_B3HW.float() + 1) / 2, (y_B3HW.float() + 1) / 2, data_range=1.0, win_size=win,
                    size_average=True)


def make_lpips(device: torch.device, cache: Path | None = None):
    """LPIPS(AlexNet) from the lpips package, frozen; a UserError if its weights are missing or refused.

    The weights come from the cache (``TORCH_HOME``) through ``restorevar.metrics.iqa.lpips_alex``: each file
    must match its full published digest and is read with weights_only=True, so a file planted there is never
    unpickled by torchvision or lpips.
    """
    from restorevar.data.weights import WEIGHTS, WeightRefused, default_cache, load_problem, unavailable_reason
    from restorevar.metrics.iqa import lpips_alex

    cache = Path(cache) if cache else default_cache()
    problems = [(spec.name, why) for spec in WEIGHTS if "lpips" in spec.needed_by
                for why in [load_problem(spec, cache)] if why]  # every problem at once, not the first only
    if not problems:
        try:
            return lpips_alex(cache).to(device).eval()
        except WeightRefused as e:  # the file changed after it was hashed, or does not fit the network
            problems = [(e.spec.name, e.reason)]
    raise UserError(f"the perceptual loss needs LPIPS weights: {unavailable_reason(problems, cache)}")


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()
