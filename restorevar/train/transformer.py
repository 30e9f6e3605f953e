"""Train the RestoreVAR transformer: teacher-forced cross-entropy over all scales (weight 1/L per token)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from restorevar.analysis.health import model_health, per_scale_accuracy
from restorevar.checkpoint import seed_rngs
from restorevar.errors import UserError
from restorevar.models import RestoreVAR
from restorevar.pretrained import pretrained_path
from restorevar.train.common import (
    DataConfig,
    LoopConfig,
    ModelRef,
    Reporter,
    accumulate_backward,
    decay_groups,
    frozen,
    load_component,
    make_train_val,
    null_reporter,
    pick_device,
    run_loop,
    set_tf32,
)
from restorevar.train.distributed import Ranks


@dataclass
class TransformerTrainConfig:
    model: ModelRef = field(default_factory=ModelRef)
    data: DataConfig = field(default_factory=DataConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(lr=1e-4))
    tokenizer_checkpoint: str = "checkpoints/tokenizer.pt"
    label_smoothing: float = 0.0
    # a transformer checkpoint to start from: a path, "pretrained" for the prior shipped for the preset, or
    # "var_d16" for VAR's published var_d16.pth (the weights cache; the paper preset)
    init_from: str = ""
    any_resolution: bool = False  # the tokenizer and init_from checkpoints may be from another image size
    # the zero-initialised gates (cross-attention gains, SOS gain) open slowly at the base LR and weight decay
    # pulls them back to zero: they get this multiple of the LR and no decay
    gain_lr_mult: float = 1.0
    # the gates' value at the start of a fresh run: at zero, the cross-attention weights get no gradient until
    # the gates themselves have moved, which they do only as far as random cross-attention outputs help
    gate_init: float = 0.0
    # the fresh weights that read the condition start where the prior has long converged: a higher LR lets
    # them become useful before the gates, seeing only noise from them, close again
    condition_lr_mult: float = 1.0
    loss_weighting: str = "token"  # token (the paper) or scale: see token_weights
    health: bool = True  # model-health diagnostics (restorevar.analysis.health) at every evaluation

    def validate(self) -> None:
        self.loop.validate()
        token_weights((1,), self.loss_weighting)  # an unknown weighting fails here, naming the key
        if self.gain_lr_mult <= 0 or self.condition_lr_mult <= 0:
            raise UserError(f"gain_lr_mult and condition_lr_mult must be positive, got {self.gain_lr_mult} and "
                            f"{self.condition_lr_mult}")


def param_groups(tr: torch.nn.Module, lr: float, weight_decay: float, gain_lr_mult: float,
                 condition_lr_mult: float = 1.0) -> list[dict]:
    """AdamW groups: the gates (``*gain``) at ``gain_lr_mult`` x LR, the other weights that read the condition
    at ``condition_lr_mult`` x LR, the rest at the LR; weight decay as ``decay_groups`` gives it."""
    from restorevar.train.prior import reads_condition

    return decay_groups(tr, lr, weight_decay, lambda name: gain_lr_mult if name.endswith("gain")
                        else condition_lr_mult if reads_condition(name) else 1.0)


def token_weights(patch_nums, weighting: str) -> torch.Tensor:
    """Loss weight of each token (sum 1). ``token``: all alike (the paper's 1/L), so the finest scale holds half
    the loss; ``scale``: each scale alike, so the coarse scales, where a degradation shows and where greedy
    decoding's errors start, weigh as much as the fine ones."""
    if weighting == "token":
        return torch.full((sum(pn * pn for pn in patch_nums),), 1 / sum(pn * pn for pn in patch_nums))
    if weighting != "scale":
        raise UserError(f"loss_weighting must be token or scale, got {weighting!r}")
    return torch.cat([torch.full((pn * pn,), 1 / (len(patch_nums) * pn * pn)) for pn in patch_nums])


def transformer_loss(model: RestoreVAR, deg_B3HW: torch.Tensor, clean_B3HW: torch.Tensor, label_smoothing: float,
                     amp: bool, weighting: str = "token"):
    """Teacher-forced cross-entropy of one batch (bf16 autocast when ``amp``), with the logits and targets."""
    with torch.autocast(deg_B3HW.device.type, dtype=torch.bfloat16, enabled=amp):
        logits, target = model.teacher_forcing(deg_B3HW, clean_B3HW)
        ce_BL = F.cross_entropy(logits.float().transpose(1, 2), target, label_smoothing=label_smoothing,
                                reduction="none")
        w_L = token_weights(model.transformer.patch_nums, weighting).to(ce_BL.device)
        loss = (ce_BL * w_L).sum(1).mean()
    return loss, logits, target


def train_transformer(cfg: TransformerTrainConfig, run_dir: str | Path, report: Reporter = null_reporter) -> dict:
    cfg.validate()
    device = pick_device(cfg.loop.device)
    set_tf32(device, cfg.loop.tf32)
    seed_rngs(cfg.loop.seed)
    model_cfg = cfg.model.build_config()
    model = RestoreVAR(model_cfg)
    load_component(model, cfg.tokenizer_checkpoint, ["vqvae"], cfg.any_resolution)
    # a resumed run then overwrites these weights with its own checkpoint's
    if cfg.init_from == "pretrained":  # the shipped prior: all but what reads the condition
        from restorevar.train.prior import load_prior

        load_prior(model.transformer, pretrained_path(cfg.model.preset, "prior"))
    elif cfg.init_from == "var_d16":  # VAR's published d16, as the paper starts: AdaLN dropped, condition path new
        from restorevar.convert import load_official_into

        summary = load_official_into(model, "var_d16")
        print(f"train_transformer: VAR d16 converted, {summary['keys_mapped']} tensors; "
              f"{len(summary['newly_initialised'])} newly initialised", flush=True)
    elif cfg.init_from:  # another transformer checkpoint (the positions ablation's pre-training): all of it
        load_component(model, cfg.init_from, ["transformer"], cfg.any_resolution)
    if cfg.gate_init:  # a resumed run then overwrites these with its own checkpoint's
        with torch.no_grad():
            for name, p in model.transformer.named_parameters():
                if name.endswith("gain"):
                    p.fill_(cfg.gate_init)
    model.to(device)
    frozen(model.vqvae)
    tr = model.transformer
    opt = torch.optim.AdamW(param_groups(tr, cfg.loop.lr, cfg.loop.weight_decay, cfg.gain_lr_mult,
                                         cfg.condition_lr_mult), betas=cfg.loop.betas)
    batches, val = make_train_val(cfg.data, cfg.loop, device)
    amp = device.type == "cuda" and cfg.loop.amp
    ranks = Ranks.current()

    tr.activation_checkpointing = cfg.loop.activation_checkpointing

    def micro_loss(b: dict) -> tuple[torch.Tensor, dict[str, float]]:
        loss, logits, target = transformer_loss(model, b["degraded"], b["clean"], cfg.label_smoothing, amp,
                                                cfg.loss_weighting)
        return loss, {"acc": (logits.argmax(-1) == target).float().mean().item()}

    def step_fn(step: int) -> dict[str, float]:
        opt.zero_grad(set_to_none=True)
        metrics = accumulate_backward(batches.batch(step, device), cfg.loop.grad_accum, micro_loss)
        ranks.average_grads(tr.parameters())
        gn = torch.nn.utils.clip_grad_norm_(tr.parameters(), cfg.loop.grad_clip)
        opt.step()
        return {**metrics, "grad_norm": float(gn)}

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
        if cfg.health:  # the gates, the copy baseline, collapse and use of the condition, over training
            out.update(model_health(model, val, seed=cfg.loop.seed))
        return out

    return run_loop(run_dir=Path(run_dir), loop=cfg.loop, model_cfg=model_cfg, train_cfg=asdict(cfg),
                    trained={"transformer": tr}, optimizers={"transformer": opt}, step_fn=step_fn, eval_fn=eval_fn,
                    components=lambda: {"vqvae": model.vqvae.state_dict(), "transformer": tr.state_dict()},
                    report=report, images_per_step=cfg.loop.batch_size)
