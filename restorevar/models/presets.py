"""Named model sizes, held in a plain dict of overrides on the paper defaults.

- ``tiny``: a forward and backward pass on CPU in well under a second; for tests.
- ``cpu``: 64 px, depth 4; the default profile's model, trained end to end in minutes on 2 CPU cores.
  ``cpu`` and ``small`` carry the tokenizer's pixel shortcut (``vqvae.shortcut``), the published model not.
- ``small``: 128 px, depth 6; a useful CPU/GPU research size.
- ``paper``: the published 512 px model (parameter counts match the paper's Table 10).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from restorevar.config import apply_overrides, from_dict
from restorevar.errors import UserError
from restorevar.models.restorevar import RestoreVARConfig

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "small": {
        "vqvae": {"image_size": 128, "ch": 64, "ch_mult": [1, 1, 2, 4], "vocab_size": 4096,
                  "patch_nums": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16], "shortcut": True},
        "transformer": {"depth": 6, "width": 384, "heads": 6, "drop_path_rate": 0.025},
        "refiner": {"width": 256, "depth": 4, "heads": 4, "mlp_dim": 512, "hart_width": 256, "hart_depth": 3},
        "discriminator": {"base_channels": 32, "n_layers": 3},
    },
    "cpu": {  # the default CPU/offline profile: 64 px, trains end to end in minutes on 2 cores
        "vqvae": {"image_size": 64, "ch": 32, "ch_mult": [1, 2, 4], "num_res_blocks": 1, "z_channels": 16,
                  "vocab_size": 512, "patch_nums": [1, 2, 3, 4, 6, 8, 11, 16], "norm_groups": 8,
                  "shortcut": True},
        "transformer": {"depth": 4, "width": 192, "heads": 4, "drop_path_rate": 0.0, "num_classes": 1},
        "refiner": {"width": 96, "depth": 2, "heads": 3, "dim_head": 32, "mlp_dim": 192,
                    "hart_width": 128, "hart_depth": 2, "hart_train_steps": 200, "hart_sample_steps": 4},
        "discriminator": {"base_channels": 16, "n_layers": 2},
    },
    "tiny": {
        "vqvae": {"image_size": 32, "ch": 16, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "z_channels": 8,
                  "vocab_size": 64, "patch_nums": [1, 2, 3, 4, 6, 8], "norm_groups": 8},
        "transformer": {"depth": 2, "width": 64, "heads": 2, "drop_path_rate": 0.0, "num_classes": 1},
        "refiner": {"width": 32, "depth": 2, "heads": 2, "dim_head": 16, "mlp_dim": 64,
                    "hart_width": 32, "hart_depth": 2, "hart_train_steps": 100, "hart_sample_steps": 4},
        "discriminator": {"base_channels": 8, "n_layers": 2},
    },
}


def get_preset(name: str, overrides: list[str] | None = None) -> RestoreVARConfig:
    """The named preset's config, with optional dotted ``key=value`` overrides."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    cfg = from_dict(RestoreVARConfig, PRESETS[name])
    return apply_overrides(cfg, overrides) if overrides else cfg


@dataclass
class ModelRef:
    """A model as a stage's config names it: a preset and overrides on it."""

    preset: str = "tiny"
    overrides: list[str] = field(default_factory=list)

    def build_config(self) -> RestoreVARConfig:
        return get_preset(self.preset, list(self.overrides))
