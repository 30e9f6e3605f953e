"""Train the RestoreVAR transformer: teacher-forced cross-entropy over all scales (weight 1/L per token)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from restorevar.models import RestoreVAR
from restorevar.train.common import (
    DataConfig,
    LoopConfig,
    ModelRef,
    Reporter,
    frozen,
    load_component,
    make_data,
    null_reporter,
    pick_device,
    run_loop,
    val_batches,
)


@dataclass
class TransformerTrainConfig:
    model: ModelRef = field(default_factory=ModelRef)
    data: DataConfig = field(default_factory=DataConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(lr=1e-4))
    tokenizer_checkpoint: str = "checkpoints/tokenizer.pt"
    label_smoothing: float = 0.0
    init_from: str = ""  # a transformer checkpoint to start from (the positions ablation's pre-training)
    any_resolution: bool = False  # the tokenizer and init_from checkpoints may be from another image size

    def validate(self) -> None:
        self.loop.validate()


def per_scale_accuracy(logits_BLV: torch.Tensor, target_BL: torch.Tensor, patch_nums) -> list[float]:
    hit = (logits_BLV.argmax(-1) == target_BL).float()
    out, begin = [], 0
    for pn in patch_nums:
        out.append(float(hit[:, begin:begin + pn * pn].mean()))
        begin += pn * pn
    return out


def transformer_loss(model: RestoreVAR, deg_B3HW: torch.Tensor, clean_B3HW: torch.Tensor, label_smoothing: float,
                     amp: bool):
    """Teacher-forced cross-entropy of one batch (bf16 autocast when ``amp``), with the logits and targets."""
    with torch.autocast(deg_B3HW.device.type, dtype=torch.bfloat16, enabled=amp):
        logits, target = model.teacher_forcing(deg_B3HW, clean_B3HW)
        loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), label_smoothing=label_smoothing)
    return loss, logits, target


def train_transformer(cfg: TransformerTrainConfig, run_dir: str | Path, report: Reporter = null_reporter) -> dict:
    cfg.validate()
    device = pick_device(cfg.loop.device)
    torch.manual_seed(cfg.loop.seed)
    model_cfg = cfg.model.build_config()
    model = RestoreVAR(model_cfg)
    load_component(model, cfg.tokenizer_checkpoint, ["vqvae"], cfg.any_resolution)
    if cfg.init_from:  # a resumed run then overwrites these weights with its own checkpoint's
        load_component(model, cfg.init_from, ["transformer"], cfg.any_resolution)
    model.to(device)
    frozen(model.vqvae)
    tr = model.transformer
    opt = torch.optim.AdamW(tr.parameters(), lr=cfg.loop.lr, betas=cfg.loop.betas, weight_decay=cfg.loop.weight_decay)
    ds, batches, val_idx = make_data(cfg.data, cfg.loop)
    val = val_batches(ds, val_idx, cfg.loop.batch_size, cfg.loop.val_batches, device)
    amp = device.type == "cuda" and cfg.loop.amp

    def step_fn(step: int) -> dict[str, float]:
        b = batches.batch(step, device)
        loss, logits, target = transformer_loss(model, b["degraded"], b["clean"], cfg.label_smoothing, amp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(tr.parameters(), cfg.loop.grad_clip)
        opt.step()
        acc = (logits.argmax(-1) == target).float().mean()
        return {"loss": loss.item(), "acc": acc.item(), "grad_norm": float(gn)}

    def eval_fn() -> dict[str, float]:
        accs, losses = [], []
        for b in val:
            logits, target = model.teacher_forcing(b["degraded"], b["clean"])
            losses.append(F.cross_entropy(logits.flatten(0, 1), target.flatten()).item())
            accs.append(per_scale_accuracy(logits, target, tr.patch_nums))
        if not accs:
            return {}
        per_scale = [sum(a[k] for a in accs) / len(accs) for k in range(len(tr.patch_nums))]
        out = {f"val_acc_scale_{k}": v for k, v in enumerate(per_scale)}
        weights = [pn * pn for pn in tr.patch_nums]
        out["val_acc"] = sum(w * a for w, a in zip(weights, per_scale)) / sum(weights)
        out["val_loss"] = sum(losses) / len(losses)
        return out

    return run_loop(run_dir=Path(run_dir), loop=cfg.loop, model_cfg=model_cfg, train_cfg=asdict(cfg),
                    trained={"transformer": tr}, optimizers={"transformer": opt}, step_fn=step_fn, eval_fn=eval_fn,
                    components=lambda: {"vqvae": model.vqvae.state_dict(), "transformer": tr.state_dict()},
                    report=report, images_per_step=cfg.loop.batch_size)
