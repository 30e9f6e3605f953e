"""Train the refiner with the transformer frozen, on the transformer's own greedy predictions (not teacher
forced): L1 (LRT) or the denoising loss (hart_mlp) to the clean continuous latent ``quant_conv(encoder(GT))``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from restorevar.imaging import mean_psnr
from restorevar.models import RestoreVAR
from restorevar.models.presets import ModelRef
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
)


@dataclass
class RefinerTrainConfig:
    model: ModelRef = field(default_factory=ModelRef)
    data: DataConfig = field(default_factory=DataConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(lr=2e-4))
    decoder_checkpoint: str = "checkpoints/decoder.pt"  # the fine-tuned VQ-VAE
    transformer_checkpoint: str = "checkpoints/transformer.pt"

    def validate(self) -> None:
        self.loop.validate()
        self.data.validate()
        self.loop.refuse("refiner", "activation_checkpointing")


def train_refiner(cfg: RefinerTrainConfig, run_dir: str | Path, report: Reporter = null_reporter) -> dict:
    run = TrainRun.setup(cfg, run_dir, report)
    device = run.device
    model = RestoreVAR(run.model_cfg)
    load_component(model, cfg.decoder_checkpoint, ["vqvae"])
    load_component(model, cfg.transformer_checkpoint, ["transformer"])
    model.to(device)
    frozen(model.vqvae)
    frozen(model.transformer)
    ref = model.refiner
    batches, val = run.data()

    def components():
        return {"vqvae": model.vqvae.state_dict(), "transformer": model.transformer.state_dict(),
                "refiner": ref.state_dict()}

    def eval_fn() -> dict[str, float]:
        raw, refined = [], []
        for b in val:
            out = model.restore(b["degraded"])
            raw.append(mean_psnr(model.vqvae.decode(out.generated.f_hat_BChw), b["clean"]))
            refined.append(mean_psnr(out.image_B3HW, b["clean"]))
        n = max(len(raw), 1)
        return {"val_psnr_unrefined": sum(raw) / n, "val_psnr_refined": sum(refined) / n}

    if not ref.trainable:  # refiner 'none': nothing to learn; evaluate and export the assembled model
        return run.export_untrained(eval_fn=eval_fn, components=components)
    opt = torch.optim.AdamW(decay_groups(ref, cfg.loop.lr, cfg.loop.weight_decay), betas=cfg.loop.betas)
    ranks = run.ranks

    def micro_loss(b: dict) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            gen = model.transformer.generate(model.condition(b["degraded"]), model.vqvae.quantizer)
            target = model.vqvae.encode(b["clean"])
        return ref.loss(gen.f_hat_BChw, gen.hidden_BLC, target), {}

    def step_fn(step: int) -> dict[str, float]:
        opt.zero_grad(set_to_none=True)
        metrics = accumulate_backward(batches.batch(step, device), cfg.loop.grad_accum, micro_loss)
        ranks.average_grads(ref.parameters())
        torch.nn.utils.clip_grad_norm_(ref.parameters(), cfg.loop.grad_clip)
        opt.step()
        return metrics

    return run.loop(trained={"refiner": ref}, optimizers={"refiner": opt}, step_fn=step_fn, eval_fn=eval_fn,
                    components=components)
