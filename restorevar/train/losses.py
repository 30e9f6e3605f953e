"""Image losses: SSIM (pytorch-msssim), LPIPS (lpips package, when its weights are cached), hinge GAN."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

from restorevar.errors import UserError


def ssim_loss(x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
    """1 - SSIM on images in [-1, 1]; the window shrinks for small crops so it always fits."""
    win = 11 if min(x_B3HW.shape[-2:]) >= 11 else 3
    return 1 - ssim((x_B3HW.float() + 1) / 2, (y_B3HW.float() + 1) / 2, data_range=1.0, win_size=win,
                    size_average=True)


def make_lpips(device: torch.device):
    """LPIPS(AlexNet) from the lpips package; a UserError if the backbone weights are not cached."""
    from restorevar.data.weights import metric_availability

    ok, reason = metric_availability()["lpips"]
    if not ok:
        raise UserError(f"the perceptual loss needs LPIPS weights: {reason}")
    import lpips

    net = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()
