"""Train the RestoreVAR transformer: teacher-forced cross-entropy over all scales (weight 1/L per token)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from restorevar.analysis.health import model_health
from restorevar.config import check_range
from restorevar.errors import UserError
from restorevar.models import RestoreVAR
from restorevar.models.presets import ModelRef
from restorevar.models.transformer import SHIFTS, reads_condition
from restorevar.pretrained import pretrained_path
from restorevar.train.common import (
    MAX_LOSS_WEIGHT,
    MAX_LR_MULT,
    MAX_STEPS,
    DataConfig,
    LoopConfig,
    Reporter,
    TrainRun,
    accumulate_backward,
    decay_groups,
    frozen,
    load_component,
    null_reporter,
    seen_val_batches,
    teacher_forced_eval,
)

MAX_GATE_INIT = 10.0  # the gates scale what reads the condition; they start at or near zero


@dataclass
class TransformerTrainConfig:
    model: ModelRef = field(default_factory=ModelRef)
    data: DataConfig = field(default_factory=DataConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(lr=1e-4))
    tokenizer_checkpoint: str = "checkpoints/tokenizer.pt"
    label_smoothing: float = 0.0
    # a transformer checkpoint to start from: a path, "pretrained" for the prior shipped for the preset (all but what
    # reads the condition), "pretrained_restoration" for the shipped conditional restoration pretraining (all of it),
    # or "var_d16" for VAR's published var_d16.pth (the weights cache; the paper preset)
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
    # weight of an auxiliary loss on the condition path: each block's ungated cross-attention output, through the
    # (fixed) head, predicts the clean tokens. With the gates at zero the main loss gives the cross-attention no
    # gradient, and near zero only a tiny, noisy one that Adam blows up to full-size steps; this one reaches it
    # directly, so the path learns to fetch what the image says before the gates decide how much of it to use
    aux_weight: float = 0.0
    # a curriculum: at step s each training pair is an identity pair (degraded = clean, where copying the
    # condition is the exact answer) with probability identity_share x (1 - s / identity_steps)
    identity_share: float = 0.0
    identity_steps: int = 0
    # a fresh cross-attention that starts local (0: the architecture's own initialisation). Its cosine attention
    # finds the condition tokens at a query's own position only once the q and k projections share a component
    # that RoPE's relative phase can act on and its temperature has grown, and under Adam each of those weights
    # moves about one LR per step: thousands of steps. With a temperature here, the q and k projections start
    # tied, the q/kv norms' biases at a constant (so every query and key share that component) and the
    # temperature at this value, so each query reads the condition around its own position from the first step.
    # Only what reads the condition is touched (a prior has none of it; a resumed run restores its own).
    cross_init_scale: float = 0.0
    # the co-located logits skip (transformer.condition_inject=colocated_logits or a shift, discrete
    # conditioning) started as the copy predictor with this strength: logit_v += copy_init x (2 e_v . e_deg -
    # |e_v|^2), largest for the degraded image's own token, so training starts at the copy predictor's accuracy
    # and learns where to differ (0: the zero start). A resumed run restores its own weights.
    copy_init: float = 0.0
    # weight of a regression loss on the latent the logits skip reads (condition_inject=colocated_(image_)shift):
    # its squared distance to the clean target token's codebook vector. Greedy decoding through a copy-started skip
    # picks the code nearest that latent, so this asks the shift for exactly what decoding needs, with a gradient
    # of the latent's own size; the cross-entropy's is copy_init times larger and flips tokens at the first step
    shift_weight: float = 0.0
    health: bool = True  # model-health diagnostics (restorevar.analysis.health) at every evaluation

    def validate(self) -> None:
        self.loop.validate()
        self.data.validate()
        check_range("label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        check_range("aux_weight", self.aux_weight, 0, MAX_LOSS_WEIGHT)
        check_range("identity_share", self.identity_share, 0, 1)
        check_range("identity_steps", self.identity_steps, 0, MAX_STEPS)
        if self.identity_share > 0 and self.identity_steps == 0:
            raise UserError("identity_share > 0 needs identity_steps > 0 (the steps over which it falls to zero)")
        if not (self.cross_init_scale == 0 or 1 <= self.cross_init_scale <= 100):
            raise UserError(f"cross_init_scale must be 0 (off) or in [1, 100] (the cosine attention's temperature "
                            f"cap), got {self.cross_init_scale}")
        if self.aux_weight and self.loop.activation_checkpointing:
            raise UserError("aux_weight does not work with loop.activation_checkpointing; switch one of them off")
        token_weights((1,), self.loss_weighting)  # an unknown weighting fails here, naming the key
        check_range("gain_lr_mult", self.gain_lr_mult, 0, MAX_LR_MULT, low_open=True)
        check_range("condition_lr_mult", self.condition_lr_mult, 0, MAX_LR_MULT, low_open=True)
        check_range("copy_init", self.copy_init, 0, 1000)
        check_range("shift_weight", self.shift_weight, 0, MAX_LOSS_WEIGHT)
        t = self.model.build_config().transformer if self.copy_init or self.shift_weight else None
        if self.copy_init and (t.condition_inject not in ("colocated_logits", *SHIFTS)
                               or t.conditioning != "discrete"):
            raise UserError("copy_init needs model overrides transformer.condition_inject=colocated_logits (or "
                            "colocated_shift, colocated_image_shift) and transformer.conditioning=discrete (the skip "
                            "it starts as a copy)")
        check_range("gate_init", self.gate_init, -MAX_GATE_INIT, MAX_GATE_INIT)
        if self.shift_weight and t.condition_inject not in SHIFTS:
            raise UserError("shift_weight needs the model override transformer.condition_inject=colocated_shift or "
                            "colocated_image_shift (the moved latent it regresses)")


def param_groups(tr: torch.nn.Module, lr: float, weight_decay: float, gain_lr_mult: float,
                 condition_lr_mult: float = 1.0) -> list[dict]:
    """AdamW groups: the gates (``*gain``) at ``gain_lr_mult`` x LR, the other weights that read the condition
    at ``condition_lr_mult`` x LR, the rest at the LR; weight decay as ``decay_groups`` gives it."""
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
                     amp: bool, weighting: str = "token", aux_weight: float = 0.0, parts: dict | None = None,
                     shift_weight: float = 0.0):
    """Teacher-forced cross-entropy of one batch (bf16 autocast when ``amp``), with the logits and targets; plus
    ``aux_weight`` x the condition path's auxiliary loss (``condition_read_loss``) and ``shift_weight`` x the moved
    latent's regression loss (``shift_loss``). ``parts``, a dict, receives the losses' values (``ce``, ``aux``,
    ``shift``)."""
    tr = model.transformer
    reads: list[torch.Tensor] | None = [] if aux_weight else None
    moved: list[torch.Tensor] | None = [] if shift_weight else None
    with torch.autocast(deg_B3HW.device.type, dtype=torch.bfloat16, enabled=amp):
        logits, target = model.teacher_forcing(deg_B3HW, clean_B3HW, reads=reads, moved=moved)
        w_L = token_weights(tr.patch_nums, weighting).to(logits.device)
        loss = weighted_ce(logits, target, w_L, label_smoothing)
        if parts is not None:
            parts["ce"] = float(loss.detach())
        if reads:
            aux = condition_read_loss(tr, reads, target, w_L)
            loss = loss + aux_weight * aux
            if parts is not None:
                parts["aux"] = float(aux.detach())
        if moved:
            shift = shift_loss(moved[0], model.vqvae.quantizer.codebook.weight, target, w_L)
            loss = loss + shift_weight * shift
            if parts is not None:
                parts["shift"] = float(shift.detach())
    return loss, logits, target


def shift_loss(m_BLCv: torch.Tensor, e_VCv: torch.Tensor, target_BL: torch.Tensor, w_L: torch.Tensor) -> torch.Tensor:
    """Squared distance of the moved latent to each clean target token's codebook vector, weighted per token."""
    d_BL = (m_BLCv.float() - e_VCv.detach().float()[target_BL]).pow(2).sum(-1)
    return (d_BL * w_L).sum(1).mean()


def weighted_ce(logits_BLV: torch.Tensor, target_BL: torch.Tensor, w_L: torch.Tensor, label_smoothing: float = 0.0):
    ce_BL = F.cross_entropy(logits_BLV.float().transpose(1, 2), target_BL, label_smoothing=label_smoothing,
                            reduction="none")
    return (ce_BL * w_L).sum(1).mean()


def condition_read_loss(tr, reads: list[torch.Tensor], target_BL: torch.Tensor, w_L: torch.Tensor) -> torch.Tensor:
    """Mean over blocks of the cross-entropy of the clean tokens predicted from each block's ungated cross-attention
    output alone, through the head with its weights held fixed: it trains what reads the condition (and the stream
    below each block, which asks the queries), never the head itself."""
    weight, bias = tr.head.weight.detach(), tr.head.bias.detach()
    losses = [weighted_ce(F.linear(tr.head_norm(r_BLC.float()), weight.float(), bias.float()), target_BL, w_L)
              for r_BLC in reads]
    return torch.stack(losses).mean()


@torch.no_grad()
def copy_initialise(model, strength: float) -> None:
    """The co-located logits skip starts as the copy predictor: with the degraded token's own codebook vector
    e_deg as input, ``2 e_v . e_deg - |e_v|^2 = |e_deg|^2 - |e_v - e_deg|^2`` is largest at v = that token."""
    e_VC = model.vqvae.quantizer.codebook.weight
    head = model.transformer.cond_inject
    head.weight.copy_(2 * strength * e_VC)
    head.bias.copy_(-strength * e_VC.pow(2).sum(1))


LOCAL_BIAS = 4.0  # the shared component's size against the normalised content's unit variance per channel


@torch.no_grad()
def local_cross_attention(tr, scale: float) -> None:
    """Every block's cross-attention starts local (see ``TransformerTrainConfig.cross_init_scale``)."""
    for b in tr.blocks:
        ca = b.cross_attn
        C = ca.q_proj.weight.shape[0]
        ca.kv_proj.weight[:C].copy_(ca.q_proj.weight)  # the key projection is the query's
        ca.norm_q.bias.fill_(LOCAL_BIAS)
        ca.norm_kv.bias.fill_(LOCAL_BIAS)
        ca.cos_scale.log_scale_1H11.fill_(math.log(scale))


def identity_mask(seed: int, step: int, batch_size: int, share: float, steps: int) -> torch.Tensor:
    """Which of step ``step``'s ``batch_size`` pairs become identity pairs: a pure function of (seed, step)."""
    p = share * max(0.0, 1.0 - step / steps) if steps else 0.0
    u = np.random.default_rng([seed, step, 7919]).random(batch_size)
    return torch.from_numpy(u < p)


def train_transformer(cfg: TransformerTrainConfig, run_dir: str | Path, report: Reporter = null_reporter) -> dict:
    run = TrainRun.setup(cfg, run_dir, report)
    device = run.device
    model = RestoreVAR(run.model_cfg)
    load_component(model, cfg.tokenizer_checkpoint, ["vqvae"], cfg.any_resolution)
    # a resumed run then overwrites these weights with its own checkpoint's
    if cfg.init_from == "pretrained_restoration":  # the shipped conditional pretraining: all of it
        load_component(model, pretrained_path(cfg.model.preset, "restoration"), ["transformer"], cfg.any_resolution)
    elif cfg.init_from == "pretrained":  # the shipped prior: all but what reads the condition
        from restorevar.train.prior import load_prior

        load_prior(model.transformer, pretrained_path(cfg.model.preset, "prior"))
    elif cfg.init_from == "var_d16":  # VAR's published d16, as the paper starts: AdaLN dropped, condition path new
        from restorevar.convert import load_official_into

        summary = load_official_into(model, "var_d16")
        print(f"train_transformer: VAR d16 converted, {summary['keys_mapped']} tensors; "
              f"{len(summary['newly_initialised'])} newly initialised", flush=True)
    elif cfg.init_from:  # another transformer checkpoint (the positions ablation's pre-training): all of it
        load_component(model, cfg.init_from, ["transformer"], cfg.any_resolution)
    if cfg.cross_init_scale:  # a resumed run then overwrites these with its own checkpoint's
        local_cross_attention(model.transformer, cfg.cross_init_scale)
    if cfg.copy_init:  # a resumed run then overwrites these with its own checkpoint's
        copy_initialise(model, cfg.copy_init)
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
    batches, val = run.data()
    amp, ranks = run.amp, run.ranks

    tr.activation_checkpointing = cfg.loop.activation_checkpointing

    def micro_loss(b: dict) -> tuple[torch.Tensor, dict[str, float]]:
        parts: dict[str, float] = {}
        loss, logits, target = transformer_loss(model, b["degraded"], b["clean"], cfg.label_smoothing, amp,
                                                cfg.loss_weighting, cfg.aux_weight, parts, cfg.shift_weight)
        metrics = {"acc": (logits.argmax(-1) == target).float().mean().item()}
        if cfg.aux_weight:  # the main loss alone, and the condition path's own
            metrics.update(ce=parts["ce"], aux_loss=parts["aux"])
        if cfg.shift_weight:
            metrics.update(ce=parts["ce"], shift_loss=parts["shift"])
        return loss, metrics

    part = ranks.part(cfg.loop.batch_size)

    def step_fn(step: int) -> dict[str, float]:
        opt.zero_grad(set_to_none=True)
        batch = batches.batch(step, device)
        if cfg.identity_share:
            same_B = identity_mask(cfg.loop.seed, step, cfg.loop.batch_size, cfg.identity_share,
                                   cfg.identity_steps)[part].to(device)
            batch["degraded"] = torch.where(same_B[:, None, None, None], batch["clean"], batch["degraded"])
        metrics = accumulate_backward(batch, cfg.loop.grad_accum, micro_loss)
        ranks.average_grads(tr.parameters())
        gn = torch.nn.utils.clip_grad_norm_(tr.parameters(), cfg.loop.grad_clip)
        opt.step()
        return {**metrics, "grad_norm": float(gn)}

    seen = seen_val_batches(cfg.data, cfg.loop, device) if cfg.data.val_photos else []

    def tf_logits(b: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return model.teacher_forcing(b["degraded"], b["clean"])

    def eval_fn() -> dict[str, float]:
        out = teacher_forced_eval(tr.patch_nums, val, tf_logits)
        if seen:  # the training scenes, for the gap to the unseen ones
            out.update({k.replace("val_", "val_seen_", 1): v
                        for k, v in teacher_forced_eval(tr.patch_nums, seen, tf_logits).items()})
        if out and cfg.health:  # the gates, the copy baseline, collapse and use of the condition, over training
            out.update(model_health(model, val, seed=cfg.loop.seed))
        return out

    return run.loop(trained={"transformer": tr}, optimizers={"transformer": opt}, step_fn=step_fn, eval_fn=eval_fn,
                    components=lambda: {"vqvae": model.vqvae.state_dict(), "transformer": tr.state_dict()})
