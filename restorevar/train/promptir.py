"""Train the PromptIR baseline on the same pairs, seeds, checkpoints and resume rules as RestoreVAR's stages.

The published recipe (PromptIR's own training code): L1 between the output and the clean image; AdamW at
2e-4 with PyTorch's default betas (0.9, 0.999) and weight decay 0.01, no gradient clipping; a linear warm-up
over 15 of 150 epochs, then a cosine decay towards zero at epoch 150, of which 120 are trained, so the LR ends
at about a tenth of its peak rather than at zero. Here epochs are steps: ``loop.warmup_steps`` is the warm-up
and ``cosine_horizon`` (150 / 120) how far past the last step the cosine would reach zero. Images are in
[-1, 1] as everywhere in this suite (the published code uses [0, 1]; with a global residual and an L1 loss the
two differ by a factor of 2 in the loss alone).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from restorevar.baselines.promptir import PromptIR, PromptIRRef
from restorevar.config import check_range
from restorevar.imaging import mean_psnr
from restorevar.train.common import (
    DataConfig,
    LoopConfig,
    Reporter,
    TrainRun,
    accumulate_backward,
    null_reporter,
)


@dataclass
class PromptIRTrainConfig:
    model: PromptIRRef = field(default_factory=PromptIRRef)
    data: DataConfig = field(default_factory=DataConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(lr=2e-4, betas=(0.9, 0.999), weight_decay=0.01))
    cosine_horizon: float = 1.25  # the cosine reaches zero at this multiple of loop.steps (150 / 120 epochs)

    def validate(self) -> None:
        self.loop.validate()
        self.data.validate()
        check_range("cosine_horizon", self.cosine_horizon, 1, 100)
        # the published recipe clips no gradient, and the model has no blocks to recompute
        self.loop.refuse("promptir", "activation_checkpointing", "grad_clip")


def warmup_cosine(steps: int, warmup: int, horizon: float) -> Callable[[int], float]:
    """The LR multiplier of each step: linear from 1 / warmup up to 1 over ``warmup`` steps, then a half cosine
    that would reach 0 at ``horizon * steps``."""
    end = horizon * steps

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(end - warmup, 1e-9)))

    return f


def train_promptir(cfg: PromptIRTrainConfig, run_dir: str | Path, report: Reporter = null_reporter) -> dict:
    run = TrainRun.setup(cfg, run_dir, report)
    device = run.device
    net = PromptIR(run.model_cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.loop.lr, betas=cfg.loop.betas,
                            weight_decay=cfg.loop.weight_decay)
    batches, val = run.data()
    ranks = run.ranks

    def micro_loss(b: dict) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.amp):
            out = net(b["degraded"])
        return F.l1_loss(out.float(), b["clean"]), {}

    def step_fn(step: int) -> dict[str, float]:
        opt.zero_grad(set_to_none=True)
        metrics = accumulate_backward(batches.batch(step, device), cfg.loop.grad_accum, micro_loss)
        ranks.average_grads(net.parameters())
        opt.step()
        return metrics

    def eval_fn() -> dict[str, float]:
        restored, degraded = [], []
        for b in val:
            restored.append(mean_psnr(net(b["degraded"]).clamp(-1, 1), b["clean"]))
            degraded.append(mean_psnr(b["degraded"], b["clean"]))
        n = max(len(restored), 1)
        return {"val_psnr": sum(restored) / n, "val_psnr_input": sum(degraded) / n}

    return run.loop(trained={"promptir": net}, optimizers={"promptir": opt}, step_fn=step_fn, eval_fn=eval_fn,
                    components=lambda: {"promptir": net.state_dict()},
                    lr_fn=warmup_cosine(cfg.loop.steps, cfg.loop.warmup_steps, cfg.cosine_horizon))
