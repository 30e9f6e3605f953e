"""Fine-tune the VQ-VAE decoder on continuous latents (encoder and quantizer frozen).

Loss: L1 + (1 - SSIM) + LPIPS + PatchGAN hinge loss, each weighted; the discriminator starts late and can be
switched off. LPIPS needs backbone weights that may be missing offline: with ``perceptual_required`` false
its weight drops to 0 and the reason is reported; with it true, training stops with a clear message.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from restorevar.config import check_range
from restorevar.errors import UserError
from restorevar.imaging import mean_psnr
from restorevar.models import PatchGAN
from restorevar.models.presets import ModelRef
from restorevar.train.common import (
    MAX_LOSS_WEIGHT,
    MAX_LR,
    MAX_STEPS,
    DataConfig,
    LoopConfig,
    Reporter,
    TrainRun,
    frozen,
    load_vqvae,
    null_reporter,
)
from restorevar.train.losses import hinge_d_loss, hinge_g_loss, make_lpips, ssim_loss


@dataclass
class DecoderTrainConfig:
    model: ModelRef = field(default_factory=ModelRef)
    data: DataConfig = field(default_factory=DataConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(lr=1e-4, weight_decay=0.0, betas=(0.5, 0.9)))
    tokenizer_checkpoint: str = "checkpoints/tokenizer.pt"
    l1_weight: float = 1.0
    ssim_weight: float = 0.2
    perceptual_weight: float = 0.1
    perceptual_required: bool = False
    adversarial_weight: float = 0.05
    discriminator: bool = True
    discriminator_start: int = 100  # steps before the adversarial term switches on
    discriminator_lr: float = 1e-4

    def validate(self) -> None:
        self.loop.validate()
        self.data.validate()
        self.loop.refuse("decoder", "grad_accum", "activation_checkpointing")
        for key in ("l1_weight", "ssim_weight", "perceptual_weight", "adversarial_weight"):
            check_range(key, getattr(self, key), 0, MAX_LOSS_WEIGHT)
        check_range("discriminator_start", self.discriminator_start, 0, MAX_STEPS)
        check_range("discriminator_lr", self.discriminator_lr, 0, MAX_LR, low_open=True)


def train_decoder(cfg: DecoderTrainConfig, run_dir: str | Path, report: Reporter = null_reporter) -> dict:
    run = TrainRun.setup(cfg, run_dir, report)
    device, model_cfg = run.device, run.model_cfg
    vae = load_vqvae(model_cfg, cfg.tokenizer_checkpoint).to(device)
    for part in (vae.encoder, vae.quant_conv, vae.quantizer):
        frozen(part)
    decoder = torch.nn.ModuleDict({"post_quant_conv": vae.post_quant_conv, "decoder": vae.decoder})
    notes: dict[str, float] = {}
    lpips_net, w_lpips = None, cfg.perceptual_weight
    if w_lpips > 0:
        try:
            lpips_net = make_lpips(device)
        except UserError as e:
            if cfg.perceptual_required:
                raise
            w_lpips, notes["perceptual_disabled"] = 0.0, 1.0
            report(0, {"perceptual_disabled": 1.0}, None)
            print(f"decoder: perceptual loss off ({e})")
    disc = PatchGAN(model_cfg.discriminator).to(device) if cfg.discriminator else None
    opts = {"decoder": torch.optim.AdamW(decoder.parameters(), lr=cfg.loop.lr, betas=cfg.loop.betas,
                                         weight_decay=cfg.loop.weight_decay)}
    trained: dict[str, torch.nn.Module] = {"decoder": decoder}
    if disc is not None:
        opts["discriminator"] = torch.optim.AdamW(disc.parameters(), lr=cfg.discriminator_lr, betas=(0.5, 0.9))
        trained["discriminator"] = disc
    batches, val = run.data()
    ranks = run.ranks

    def step_fn(step: int) -> dict[str, float]:
        x = batches.batch(step, device)["clean"]
        with torch.no_grad():
            f = vae.encode(x)
        rec = vae.decode_unclamped(f)
        l1 = F.l1_loss(rec, x)
        loss = cfg.l1_weight * l1 + cfg.ssim_weight * ssim_loss(rec.clamp(-1, 1), x)
        out = {"l1": l1.item()}
        if lpips_net is not None and w_lpips > 0:
            p = lpips_net(rec.clamp(-1, 1), x).mean()
            loss = loss + w_lpips * p
            out["lpips"] = p.item()
        adv_on = disc is not None and step >= cfg.discriminator_start and cfg.adversarial_weight > 0
        if adv_on:
            g = hinge_g_loss(disc(rec))
            loss = loss + cfg.adversarial_weight * g
            out["g_loss"] = g.item()
        opts["decoder"].zero_grad(set_to_none=True)
        loss.backward()
        ranks.average_grads(decoder.parameters())
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), cfg.loop.grad_clip)
        opts["decoder"].step()
        if adv_on:
            d = hinge_d_loss(disc(x), disc(rec.detach()))
            opts["discriminator"].zero_grad(set_to_none=True)
            d.backward()
            ranks.average_grads(disc.parameters())
            opts["discriminator"].step()
            out["d_loss"] = d.item()
        out["loss"] = loss.item()
        return out

    def eval_fn() -> dict[str, float]:
        cont, disc_psnr = [], []
        for b in val:
            f = vae.encode(b["clean"])
            cont.append(mean_psnr(vae.decode(f), b["clean"]))
            disc_psnr.append(mean_psnr(vae.decode(vae.quantize(f).f_hat_BChw), b["clean"]))
        n = max(len(cont), 1)
        return {"val_psnr_continuous": sum(cont) / n, "val_psnr_discrete": sum(disc_psnr) / n, **notes}

    return run.loop(trained=trained, optimizers=opts, step_fn=step_fn, eval_fn=eval_fn,
                    components=lambda: {"vqvae": vae.state_dict(), **({"discriminator": disc.state_dict()} if disc else {})},
                    resume_modules={"vqvae": vae, **({"discriminator": disc} if disc else {})})
