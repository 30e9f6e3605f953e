import os

for _k, _v in {"HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "DVC_NO_ANALYTICS": "1",
               "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_k, _v)

import pytest
import torch

from restorevar.models import RestoreVAR, get_preset


@pytest.fixture
def tiny_cfg():
    return get_preset("tiny")


def make_tiny(overrides=(), seed=0, gains=None) -> RestoreVAR:
    """A seeded tiny model in eval mode; ``gains`` sets every zero-initialised gate (to exercise conditioning)."""
    torch.manual_seed(seed)
    m = RestoreVAR(get_preset("tiny", list(overrides))).eval()
    if gains is not None:
        with torch.no_grad():
            m.transformer.sos_gain.fill_(gains)
            for b in m.transformer.blocks:
                b.cross_attn.gain.fill_(gains)
    return m


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(123)
    deg = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    clean = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    return deg, clean
