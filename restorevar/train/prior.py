"""Pretrain the transformer as an unconditional next-scale prior of clean images (VAR's own task).

The paper starts RestoreVAR from VAR-d16, which learnt on ImageNet what images look like before it ever saw
a degraded one; this is that step at the preset's own scale. The model is RestoreVAR's transformer itself,
so the result loads into it as VAR-d16 does: everything that reads the condition (the cross-attention
blocks, the condition embeddings and the SOS gate) stays at its initial value and out of the optimizer,
and with every gate at zero the output does not depend on the condition at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from restorevar.checkpoint import load_checkpoint
from restorevar.config import check_range
from restorevar.errors import UserError
from restorevar.models import RestoreVAR
from restorevar.models.presets import ModelRef
from restorevar.models.transformer import reads_condition
from restorevar.train.common import (
    DataConfig,
    LoopConfig,
    Reporter,
    TrainRun,
    accumulate_backward,
    decay_groups,
    frozen,
    load_component,
    null_reporter,
    teacher_forced_eval,
)


def load_prior(transformer: torch.nn.Module, path: str | Path) -> None:
    """Start a restoration transformer from a prior: every weight but those that read the condition, which
    keep their fresh initialisation (gates at zero), as RestoreVAR starts from VAR-d16. So a variant that
    reads the condition differently (discrete conditioning) starts from the same prior."""
    sd = load_checkpoint(path)["components"].get("transformer")
    if not isinstance(sd, dict):
        raise UserError(f"{path} holds no transformer weights; give a prior made by pretrain_prior")
    own = transformer.state_dict()
    keep = {k: v for k, v in sd.items() if not reads_condition(k)}
    wanted = [k for k in own if not reads_condition(k)]
    odd = [k for k in keep if k not in own or own[k].shape != keep[k].shape] + [k for k in wanted if k not in keep]
    if odd:
        k = odd[0]
        got = tuple(keep[k].shape) if k in keep else "absent"
        want = tuple(own[k].shape) if k in own else "absent"
        raise UserError(f"prior {path} does not fit this transformer ({k}: {got} in the file, {want} here); "
                        "use the preset it was made for, or init_from \"\" to train from scratch")
    transformer.load_state_dict(keep, strict=False)


@dataclass
class PriorTrainConfig:
    model: ModelRef = field(default_factory=ModelRef)
    data: DataConfig = field(default_factory=DataConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(lr=1e-4))
    tokenizer_checkpoint: str = "checkpoints/pretrain_tokenizer.pt"
    label_smoothing: float = 0.0

    def validate(self) -> None:
        self.loop.validate()
        self.data.validate()
        check_range("label_smoothing", self.label_smoothing, 0, 1, high_open=True)


def prior_logits(model: RestoreVAR, clean_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced logits of the clean image's tokens, the condition being a constant zero."""
    _, x_in_BLCv, target_BL = model.teacher_inputs(clean_B3HW, clean_B3HW)  # fp32 tokens, as for restoration
    cond_BNCv = clean_B3HW.new_zeros(clean_B3HW.shape[0], model.transformer.n_cond, model.cfg.vqvae.z_channels)
    return model.transformer(cond_BNCv, x_in_BLCv), target_BL


def train_prior(cfg: PriorTrainConfig, run_dir: str | Path, report: Reporter = null_reporter) -> dict:
    run = TrainRun.setup(cfg, run_dir, report)
    device = run.device
    model = RestoreVAR(run.model_cfg)
    load_component(model, cfg.tokenizer_checkpoint, ["vqvae"])
    model.to(device)
    frozen(model.vqvae)
    tr = model.transformer
    gates = [p for n, p in tr.named_parameters() if n.endswith("gain")]
    if any(float(g.detach()) != 0.0 for g in gates):
        raise UserError("the prior must start with every condition gate at zero")
    learnt = [p for n, p in tr.named_parameters() if not reads_condition(n)]
    for n, p in tr.named_parameters():
        p.requires_grad_(not reads_condition(n))
    opt = torch.optim.AdamW(decay_groups(tr, cfg.loop.lr, cfg.loop.weight_decay), betas=cfg.loop.betas)
    batches, val = run.data()
    amp, ranks = run.amp, run.ranks

    tr.activation_checkpointing = cfg.loop.activation_checkpointing

    def micro_loss(b: dict) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits, target = prior_logits(model, b["clean"])
            loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), label_smoothing=cfg.label_smoothing)
        return loss, {"acc": (logits.argmax(-1) == target).float().mean().item()}

    def step_fn(step: int) -> dict[str, float]:
        opt.zero_grad(set_to_none=True)
        metrics = accumulate_backward(batches.batch(step, device), cfg.loop.grad_accum, micro_loss)
        ranks.average_grads(learnt)
        gn = torch.nn.utils.clip_grad_norm_(learnt, cfg.loop.grad_clip)
        opt.step()
        return {**metrics, "grad_norm": float(gn)}

    def eval_fn() -> dict[str, float]:
        return teacher_forced_eval(tr.patch_nums, val, lambda b: prior_logits(model, b["clean"]))

    return run.loop(trained={"transformer": tr}, optimizers={"transformer": opt}, step_fn=step_fn, eval_fn=eval_fn,
                    components=lambda: {"vqvae": model.vqvae.state_dict(), "transformer": tr.state_dict()})
