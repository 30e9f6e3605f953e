"""PatchGAN discriminator (Isola et al., 2017) for decoder fine-tuning: one real/fake logit per patch."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from restorevar.config import check_range


@dataclass
class DiscriminatorConfig:
    base_channels: int = 64
    n_layers: int = 3

    def validate(self) -> None:
        # each layer halves the grid of patches: past 8, a 512 px crop has none left
        check_range("discriminator.base_channels", self.base_channels, 1, 1024)
        check_range("discriminator.n_layers", self.n_layers, 1, 8)


class PatchGAN(nn.Module):
    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        c = cfg.base_channels
        layers: list[nn.Module] = [nn.Conv2d(3, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        c_prev = c
        for n in range(1, cfg.n_layers + 1):
            c_out = c * min(2**n, 8)
            stride = 2 if n < cfg.n_layers else 1
            # BatchNorm follows a bias-free conv: its shift makes the conv bias redundant.
            layers += [nn.Conv2d(c_prev, c_out, 4, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True)]
            c_prev = c_out
        layers.append(nn.Conv2d(c_prev, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        return self.net(x_B3HW)
