"""Train the multi-scale VQ-VAE from scratch: L1 + (1 - SSIM) + VQ loss, on clean and degraded images."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from restorevar.config import check_range
from restorevar.errors import UserError
from restorevar.imaging import mean_psnr
from restorevar.models import VQVAE
from restorevar.models.presets import ModelRef
from restorevar.pretrained import pretrained_path
from restorevar.train.common import (
    MAX_LOSS_WEIGHT,
    MAX_STEPS,
    DataConfig,
    LoopConfig,
    Reporter,
    TrainRun,
    frozen,
    load_vqvae,
    null_reporter,
)
from restorevar.train.distributed import Ranks
from restorevar.train.losses import ssim_loss

# a code's usage is an average of its hits per batch (a count of tokens), summed over the scales: a threshold
# above any batch's count restarts every code (a test does), one past this is a typo
MAX_DEAD_CODE_THRESHOLD = 1e12


@dataclass
class TokenizerTrainConfig:
    model: ModelRef = field(default_factory=ModelRef)
    data: DataConfig = field(default_factory=DataConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(lr=2e-4, weight_decay=0.0, betas=(0.5, 0.9)))
    l1_weight: float = 1.0
    ssim_weight: float = 0.2
    vq_weight: float = 1.0
    # each step sees batch_size images: this share degraded (so the encoder knows them), the rest clean
    degraded_share: float = 0.5
    restart_dead_codes_every: int = 25  # 0 disables; dead codes restart on random current latents
    # a tokenizer checkpoint to start from: a path, "pretrained" for the one shipped for the preset, or "var"
    # for VAR's published vae_ch160v4096z32 (the weights cache; the paper preset)
    init_from: str = ""
    dead_code_threshold: float = 0.03
    # keep the initial weights as they are (the paper keeps VAR's VAE frozen): evaluate and export, no training
    frozen: bool = False

    def validate(self) -> None:
        self.loop.validate()
        self.data.validate()
        self.loop.refuse("tokenizer", "grad_accum", "activation_checkpointing")
        if self.frozen and not self.init_from:
            raise UserError("frozen needs init_from (a checkpoint, pretrained or var) to keep")
        for key in ("l1_weight", "ssim_weight", "vq_weight"):
            check_range(key, getattr(self, key), 0, MAX_LOSS_WEIGHT)
        check_range("degraded_share", self.degraded_share, 0, 1)
        check_range("restart_dead_codes_every", self.restart_dead_codes_every, 0, MAX_STEPS)
        check_range("dead_code_threshold", self.dead_code_threshold, 0, MAX_DEAD_CODE_THRESHOLD)


def _restart_dead_codes(vae: VQVAE, f_BChw: torch.Tensor, threshold: float, ranks: Ranks) -> int:
    q = vae.quantizer
    dead = q.usage_ema_SV.sum(0) < threshold  # the same on every rank: the usage average is the ranks' mean
    n = int(dead.sum())
    if n:
        pool = f_BChw.detach().permute(0, 2, 3, 1).reshape(-1, f_BChw.shape[1])
        pick = torch.randint(0, pool.shape[0], (n,), device=pool.device)
        with torch.no_grad():
            q.codebook.weight[dead] = pool[pick] + 0.01 * torch.randn_like(pool[pick])
            q.usage_ema_SV[:, dead] = threshold  # give restarted codes a grace period
        ranks.broadcast_(q.codebook.weight.data)  # rank 0's latents restart the codes everywhere
    return n


def tokenizer_loss(vae: VQVAE, f_BChw: torch.Tensor, x_B3HW: torch.Tensor, cfg: TokenizerTrainConfig):
    """The weighted loss of one step on the encoded batch, with its L1 and SSIM parts and the quantizer output."""
    q = vae.quantize(f_BChw)
    rec = vae.decode_unclamped(q.f_hat_BChw)
    l1 = F.l1_loss(rec, x_B3HW)
    ss = ssim_loss(rec.clamp(-1, 1), x_B3HW) if cfg.ssim_weight else rec.new_zeros(())
    return cfg.l1_weight * l1 + cfg.ssim_weight * ss + cfg.vq_weight * q.vq_loss, l1, ss, q


def train_tokenizer(cfg: TokenizerTrainConfig, run_dir: str | Path, report: Reporter = null_reporter) -> dict:
    run = TrainRun.setup(cfg, run_dir, report)
    device, model_cfg = run.device, run.model_cfg
    vae = VQVAE(model_cfg.vqvae)
    if cfg.init_from == "var":
        from types import SimpleNamespace

        from restorevar.convert import load_official_into

        summary = load_official_into(SimpleNamespace(cfg=model_cfg, vqvae=vae), "var")
        print(f"train_tokenizer: VAR's VQ-VAE converted, {summary['keys_mapped']} tensors", flush=True)
    elif cfg.init_from:  # a resumed run then overwrites these weights with its own checkpoint's
        vae = load_vqvae(model_cfg, pretrained_path(cfg.model.preset, "tokenizer") if cfg.init_from == "pretrained"
                         else cfg.init_from)
    vae.to(device)
    batches, val = run.data()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.loop.lr, betas=cfg.loop.betas, weight_decay=cfg.loop.weight_decay)
    restarts = {"n": 0}
    ranks = run.ranks

    def step_fn(step: int) -> dict[str, float]:
        b = batches.batch(step, device)
        n_deg = round(b["clean"].shape[0] * cfg.degraded_share)
        x = torch.cat([b["clean"][n_deg:], b["degraded"][:n_deg]])
        usage = vae.quantizer.usage_ema_SV
        if ranks.many:  # the running code counts in this rank's share, so the ranks' mean below times their
            usage /= ranks.world  # number is the count over the global batch, as one process counts it
        f = vae.encode(x)
        if step == 0 and not cfg.init_from:  # data-dependent codebook init: start the codes where the latents are
            pool = f.detach().permute(0, 2, 3, 1).reshape(-1, f.shape[1])
            pick = torch.randint(0, pool.shape[0], (vae.cfg.vocab_size,), device=pool.device)
            with torch.no_grad():
                vae.quantizer.codebook.weight.copy_(pool[pick] + 0.01 * torch.randn_like(pool[pick]))
            ranks.broadcast_(vae.quantizer.codebook.weight.data)
        loss, l1, ss, q = tokenizer_loss(vae, f, x, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        ranks.average_grads(vae.parameters())
        if ranks.many:
            ranks.average_(usage)
            usage *= ranks.world
        torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.loop.grad_clip)
        opt.step()
        if cfg.restart_dead_codes_every and (step + 1) % cfg.restart_dead_codes_every == 0:
            restarts["n"] += _restart_dead_codes(vae, f, cfg.dead_code_threshold, ranks)
        return {"loss": loss.item(), "l1": l1.item(), "ssim_loss": float(ss.detach()), "vq_loss": q.vq_loss.item(),
                "codes_restarted": restarts["n"]}

    def eval_fn() -> dict[str, float]:
        disc, cont, used = [], [], set()
        for b in val:
            f = vae.encode(b["clean"])
            q = vae.quantize(f)
            disc.append(mean_psnr(vae.decode(q.f_hat_BChw), b["clean"]))
            cont.append(mean_psnr(vae.decode(f), b["clean"]))
            used |= set(torch.cat([i.flatten() for i in q.idx_list]).tolist())
        n = max(len(disc), 1)
        return {"val_psnr_discrete": sum(disc) / n, "val_psnr_continuous": sum(cont) / n,
                "val_codebook_usage": len(used) / vae.cfg.vocab_size}

    if cfg.frozen:  # one evaluation, then the checkpoint of the weights as they came
        frozen(vae)  # in eval mode, the quantizer's usage statistics stay as they came too
        return run.export_untrained(eval_fn=eval_fn, components=lambda: {"vqvae": vae.state_dict()})
    return run.loop(trained={"vqvae": vae}, optimizers={"vqvae": opt}, step_fn=step_fn, eval_fn=eval_fn,
                    components=lambda: {"vqvae": vae.state_dict()}, counters=restarts)
