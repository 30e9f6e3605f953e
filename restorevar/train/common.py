"""What every trainer shares: the loop config, data batches as a pure function of the step, the LR
schedule, the reporting callback and resumable checkpoints.

Bit-exact resume on CPU rests on two things: the batch of step s depends only on (seed, s), and the
checkpoint restores every RNG state with the weights, optimizer and scheduler.
"""
from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from restorevar.checkpoint import (
    check_weights,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_rngs,
    set_rng_state,
)
from restorevar.config import check_range
from restorevar.data.dataset import PairedDataset, PairedTransform
from restorevar.device import pick_device, set_tf32
from restorevar.errors import UserError
from restorevar.models import RestoreVARConfig
from restorevar.train.distributed import Ranks

CKPT_NAME = "last.pt"

# Bounds of the numeric settings: far beyond any run of this suite, yet tight enough that a typo (a zero, an
# exponent too many) fails when params.yaml is checked, not hours into a run or as an overflow in a schedule.
MAX_STEPS = 10_000_000
MAX_BATCH_SIZE = 65_536
MAX_LR = 1.0
MAX_WEIGHT_DECAY = 10.0
MAX_GRAD_CLIP = 1e6
MAX_SEED = 2**32 - 1  # NumPy's global seed (seed_rngs) takes no larger one
MAX_COUNT = 1_000_000  # validation batches, scenes or images held out
MAX_PIXELS = 16_384  # a crop or resized side
MAX_WORKERS = 256
MAX_LOSS_WEIGHT = 100.0
MAX_LR_MULT = 1e4


@dataclass
class DataConfig:
    # manifest: the fixed pairs of train_manifest; onthefly: a fresh crop and degradation per image and step,
    # drawn from `photos` ("shipped" training photographs, or a corpus.json from `restorevar data corpus`)
    pairs: str = "manifest"
    photos: str = "shipped"
    min_crop_fraction: float = 0.4  # onthefly: crop side as a fraction of the photo's shorter side
    val_scenes: int = 0  # onthefly: whole scenes held out for validation (0: validate on its own pair stream)
    # onthefly: "unseen" validates on the shipped validation scenes (restorevar.data.photos: never trained on, never
    # the test split), so that what is chosen generalises; "" on held-out scenes of `photos` or its own stream
    val_photos: str = ""
    train_manifest: str = "data/synth/train.json"
    val_fraction: float = 0.1  # held out of the training manifest for validation; the test split is never used
    val_per_group: int | None = None  # at most this many per (dataset, degradation); the official holds out 100
    # which images (or scenes) are held out, and the validation pairs: fixed while loop.seed varies, so every
    # training seed learns from the same images and is validated on the same pairs
    split_seed: int = 0
    crop: int = 64
    resize_shorter: int | None = None
    hflip: bool = False
    # onthefly: each training crop's colours permuted and scaled before it is degraded (restorevar.data.pairs.recolour),
    # so that a few photographs teach the degradations' colour rules rather than their own palette
    recolour: bool = False
    skip_corrupt: bool = False
    num_workers: int = 0  # processes that build the next batches while the model trains (0: in the loop itself)

    def validate(self) -> None:
        if self.val_photos not in ("", "unseen"):
            raise UserError(f"data.val_photos must be \"unseen\" or \"\", got {self.val_photos!r}")
        if self.val_photos and self.pairs != "onthefly":
            raise UserError("data.val_photos needs data.pairs: onthefly (a manifest holds its own validation share)")
        if self.recolour and self.pairs != "onthefly":
            raise UserError("data.recolour needs data.pairs: onthefly (a manifest's pairs are degraded already)")
        check_range("data.min_crop_fraction", self.min_crop_fraction, 0, 1, low_open=True)
        check_range("data.val_scenes", self.val_scenes, 0, MAX_COUNT)
        check_range("data.val_fraction", self.val_fraction, 0, 1, high_open=True)
        if self.val_per_group is not None:
            check_range("data.val_per_group", self.val_per_group, 0, MAX_COUNT)
        check_range("data.split_seed", self.split_seed, 0, MAX_SEED)
        check_range("data.crop", self.crop, 1, MAX_PIXELS)
        if self.resize_shorter is not None:
            check_range("data.resize_shorter", self.resize_shorter, 1, MAX_PIXELS)
        check_range("data.num_workers", self.num_workers, 0, MAX_WORKERS)


@dataclass
class LoopConfig:
    steps: int = 200
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 2.0
    warmup_steps: int = 0  # linear LR ramp from lr / warmup_steps over the first steps, then the schedule below
    flat_fraction: float = 0.05  # flat LR for this fraction of steps, then linear decay
    final_lr_fraction: float = 0.01
    seed: int = 0
    ckpt_every: int = 50
    log_every: int = 10
    eval_every: int = 50
    val_batches: int = 4
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # used only on CUDA
    tf32: bool = True  # CUDA: TF32 matmuls and convolutions for fp32, as the official code sets them
    # memory: the step's batch of `batch_size` runs as this many micro-batches whose gradients add up to the
    # whole batch's (the update is the same, up to float rounding and drop-path's random draws)
    grad_accum: int = 1
    activation_checkpointing: bool = False  # transformer blocks recompute their activations in the backward

    def validate(self) -> None:
        check_range("loop.steps", self.steps, 1, MAX_STEPS)
        check_range("loop.batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        check_range("loop.lr", self.lr, 0, MAX_LR, low_open=True)
        check_range("loop.weight_decay", self.weight_decay, 0, MAX_WEIGHT_DECAY)
        for i, beta in enumerate(self.betas):
            check_range(f"loop.betas[{i}]", beta, 0, 1, high_open=True)  # Adam's moments average over 1/(1-beta)
        check_range("loop.grad_clip", self.grad_clip, 0, MAX_GRAD_CLIP, low_open=True)
        if self.grad_accum <= 0 or self.batch_size % self.grad_accum:
            raise UserError(f"loop.grad_accum={self.grad_accum} must be a positive divisor of "
                            f"loop.batch_size={self.batch_size}")
        check_range("loop.flat_fraction", self.flat_fraction, 0, 1)
        check_range("loop.final_lr_fraction", self.final_lr_fraction, 0, 1)
        if not 0 <= self.warmup_steps < self.steps:
            raise UserError(f"loop.warmup_steps={self.warmup_steps} must be in [0, loop.steps={self.steps})")
        check_range("loop.seed", self.seed, 0, MAX_SEED)
        # the trainer takes the step modulo each of these: 0 would divide by zero at the first step
        for key in ("ckpt_every", "log_every", "eval_every"):
            check_range(f"loop.{key}", getattr(self, key), 1, MAX_STEPS)
        check_range("loop.val_batches", self.val_batches, 0, MAX_COUNT)

    def refuse(self, trainer: str, *keys: str) -> None:
        """A UserError if any of ``keys`` is set away from its default: ``trainer`` does not implement it, and a
        setting that is accepted and then ignored would misreport the run."""
        for key in keys:
            if getattr(self, key) != getattr(LoopConfig, key):
                raise UserError(f"loop.{key}={getattr(self, key)} is not implemented by the {trainer} trainer; remove "
                                "it (it would be ignored)")


class Reporter(Protocol):
    """Called on every rank at each logged or checkpointed step, after that step's checkpoint is written; a
    resumed run first reports its checkpoint's step again (the report a kill may have cut off)."""

    def __call__(self, step: int, metrics: dict[str, float], checkpoint: Path | None = None) -> None: ...


def null_reporter(step: int, metrics: dict[str, float], checkpoint: Path | None = None) -> None:
    return None


def lr_lambda(cfg: LoopConfig) -> Callable[[int], float]:
    """A linear ramp over ``warmup_steps`` (none by default), flat up to ``flat_fraction`` of the steps, then linear
    decay to ``final_lr_fraction``."""
    flat = int(cfg.steps * cfg.flat_fraction)

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if step < flat:
            return 1.0
        t = (step - flat) / max(1, cfg.steps - flat)
        return 1.0 - (1.0 - cfg.final_lr_fraction) * min(1.0, t)

    return f


# ------------------------------------------------------------------------------------------------
# Data: batches as a pure function of the step
# ------------------------------------------------------------------------------------------------
class StepBatches:
    """Degradation-balanced batches drawn with replacement; batch s depends only on (seed, s)."""

    def __init__(self, dataset: PairedDataset, indices: list[int], batch_size: int, seed: int):
        self.ds, self.batch_size, self.seed = dataset, batch_size, seed
        groups: dict[int, list[int]] = {}
        for i in indices:
            groups.setdefault(dataset.entries[i].degradation, []).append(i)
        if not groups:
            raise UserError(f"no training entries in {dataset.manifest}")
        self.groups = [np.asarray(v) for _, v in sorted(groups.items())]
        self.part = slice(None)  # the positions of each batch this process builds (its rank's share)

    def indices(self, step: int) -> list[int]:
        rng = np.random.default_rng([self.seed, step])
        out = []
        for g in rng.integers(0, len(self.groups), self.batch_size):
            members = self.groups[g]
            out.append(int(members[rng.integers(0, len(members))]))
        return out

    def batch(self, step: int, device: torch.device) -> dict[str, Any]:
        items = [self.ds.item(i, epoch=step) for i in self.indices(step)[self.part]]
        items = [it for it in items if it is not None]
        if not items:
            raise UserError(f"every image of the batch at step {step} was unreadable")
        return {k: (torch.stack([it[k] for it in items]).to(device) if isinstance(items[0][k], torch.Tensor)
                    else [it[k] for it in items]) for k in items[0]}


# ------------------------------------------------------------------------------------------------
# Optimisation
# ------------------------------------------------------------------------------------------------
# Parameters that take no weight decay, as VAR's and the official code's parameter filter has it: vectors
# (biases, norms), and the embeddings and scales named here (our log_scale_1H11 is their scale_mul_1H11;
# cond_pos_1NC is the APE variant's condition table). Unlike theirs, the 0-dim gates are exempt too: decay
# pulls a zero-initialised gate back to zero.
NO_DECAY_NAMES = ("cls_token", "start_token", "task_token", "cfg_uncond", "pos_embed", "pos_1LC", "pos_start",
                  "start_pos", "lvl_embed", "gamma", "beta", "ada_gss", "moe_bias", "scale_mul", "log_scale",
                  "cond_pos_1NC")


def decays(name: str, p: torch.Tensor) -> bool:
    return p.ndim > 1 and not name.endswith("bias") and not any(k in name for k in NO_DECAY_NAMES)


def decay_groups(module: torch.nn.Module, lr: float, weight_decay: float,
                 lr_mult: Callable[[str], float] = lambda name: 1.0) -> list[dict]:
    """AdamW parameter groups of ``module``'s trainable parameters: by LR multiple, and decayed or not."""
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, p in module.named_parameters():
        if p.requires_grad:
            groups.setdefault((lr_mult(name), decays(name, p)), []).append(p)
    return [{"params": ps, "lr": lr * mult, "weight_decay": weight_decay if decay else 0.0}
            for (mult, decay), ps in groups.items()]


class _StepBatchesDataset(torch.utils.data.Dataset):
    def __init__(self, source: Any, steps: int):
        self.source, self.steps = source, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> dict[str, Any]:
        return self.source.batch(step, "cpu")


class PrefetchedBatches:
    """``source.batch(step)`` built ahead in ``num_workers`` worker processes, in pinned memory on CUDA, and
    copied without blocking. A batch is still a pure function of (seed, step), so what a worker builds is what
    the loop would have built itself, and resume stays exact; a step out of sequence restarts the workers
    there."""

    def __init__(self, source: Any, steps: int, num_workers: int, device: torch.device):
        self.source, self.steps, self.num_workers, self.device = source, steps, num_workers, torch.device(device)
        self._iter, self._next = None, None

    def _start(self, step: int) -> None:
        loader = torch.utils.data.DataLoader(
            _StepBatchesDataset(self.source, self.steps), batch_size=None, sampler=range(step, self.steps),
            num_workers=self.num_workers, pin_memory=self.device.type == "cuda", prefetch_factor=2)
        self._iter, self._next = iter(loader), step

    def batch(self, step: int, device) -> dict[str, Any]:
        if self._iter is None or step != self._next:
            self._start(step)
        b = next(self._iter)
        self._next = step + 1
        return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in b.items()}


def micro_batches(batch: dict[str, Any], parts: int) -> list[tuple[dict[str, Any], float]]:
    """``batch`` cut along its first dimension into ``parts`` micro-batches, each with its share of the images."""
    n = len(batch["degraded"] if "degraded" in batch else batch["clean"])
    size = math.ceil(n / parts)
    out = []
    for lo in range(0, n, size):
        hi = min(lo + size, n)
        out.append(({k: v[lo:hi] for k, v in batch.items()}, (hi - lo) / n))
    return out


def accumulate_backward(batch: dict[str, Any], parts: int,
                        loss_fn: Callable[[dict[str, Any]], tuple[torch.Tensor, dict[str, float]]]) -> dict[str, float]:
    """Backward of ``loss_fn`` over ``batch`` in ``parts`` micro-batches; the metrics are the batch's.

    Each micro-batch's loss (a mean over its images) is scaled by its share, so the summed gradient is the
    gradient of the whole batch's mean loss while only one micro-batch's activations are alive at a time.
    """
    totals: dict[str, float] = {}
    for mb, share in micro_batches(batch, parts):
        loss, metrics = loss_fn(mb)
        (loss * share).backward()
        for k, v in {"loss": loss.item(), **metrics}.items():
            totals[k] = totals.get(k, 0.0) + share * float(v)
    return totals


def split_train_val(groups: list[Any], val_fraction: float, seed: int,
                    val_per_group: int | None = None) -> tuple[list[int], list[int]]:
    """Training and validation indices, stratified: ``val_fraction`` of every group (at least one image, at
    most ``val_per_group``) is held out. The validation list takes the groups in turn, so its first batches
    cover every dataset and degradation (a merged manifest lists one dataset after another)."""
    by_group: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    rng = np.random.default_rng([seed, 12345])
    train, val_lists = [], []
    for g in sorted(by_group, key=str):
        members = [by_group[g][j] for j in rng.permutation(len(by_group[g]))]
        n = len(members)
        n_val = min(max(round(n * val_fraction), 1), n - 1) if val_fraction > 0 and n > 1 else 0
        if val_per_group is not None:
            n_val = min(n_val, val_per_group)
        val_lists.append(members[:n_val])
        train += members[n_val:]
    val = [lst[k] for k in range(max(map(len, val_lists), default=0)) for lst in val_lists if k < len(lst)]
    return sorted(train), val


def make_data(data: DataConfig, loop: LoopConfig) -> tuple[PairedDataset, StepBatches, list[int]]:
    t = PairedTransform(crop=data.crop, resize_shorter=data.resize_shorter, hflip=data.hflip, mode="train")
    ds = PairedDataset(data.train_manifest, t, seed=loop.seed, skip_corrupt=data.skip_corrupt)
    groups = [(e.dataset, e.degradation) for e in ds.entries]
    train_idx, val_idx = split_train_val(groups, data.val_fraction, data.split_seed, data.val_per_group)
    return ds, StepBatches(ds, train_idx, loop.batch_size, loop.seed), val_idx


def make_train_val(data: DataConfig, loop: LoopConfig, device) -> tuple[Any, list[dict]]:
    """The step-indexed training batches and the fixed validation batches that ``data`` describes."""
    if data.num_workers < 0:
        raise UserError(f"data.num_workers must be >= 0, got {data.num_workers}")
    data.validate()
    if data.pairs == "manifest":
        ds, batches, val_idx = make_data(data, loop)
        val = val_batches(ds, val_idx, loop.batch_size, loop.val_batches, device)
    elif data.pairs == "onthefly":
        from restorevar.data.pairs import SynthPairs, load_scenes, split_scenes

        train, held_out = split_scenes(load_scenes(data.photos), data.val_scenes, data.split_seed)
        batches = SynthPairs(train, data.crop, loop.batch_size, loop.seed, min_crop_fraction=data.min_crop_fraction,
                             recolour=data.recolour)
        val_scenes = load_scenes("unseen") if data.val_photos == "unseen" else held_out or train
        val_src = SynthPairs(val_scenes, data.crop, loop.batch_size, data.split_seed,
                             min_crop_fraction=data.min_crop_fraction)
        val = val_src.fixed_batches(loop.val_batches, device)
    else:
        raise UserError(f"data.pairs must be manifest or onthefly, got {data.pairs!r}")
    batches.part = Ranks.current().part(loop.batch_size)  # all of it with one process
    if data.num_workers:
        batches = PrefetchedBatches(batches, loop.steps, data.num_workers, device)
    return batches, val


def seen_val_batches(data: DataConfig, loop: LoopConfig, device) -> list[dict]:
    """Validation pairs from the training scenes themselves (new crops and degradations, from a stream training
    never draws): beside the unseen-scene validation, the gap between the two shows overfitting to the scenes."""
    from restorevar.data.pairs import SynthPairs, load_scenes, split_scenes

    if data.pairs != "onthefly":
        return []
    train, _ = split_scenes(load_scenes(data.photos), data.val_scenes, data.split_seed)
    return SynthPairs(train, data.crop, loop.batch_size, data.split_seed,
                      min_crop_fraction=data.min_crop_fraction).fixed_batches(loop.val_batches, device)


def teacher_forced_eval(patch_nums, batches: list[dict],
                        logits_fn: Callable[[dict], tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Teacher-forced accuracy (per scale and token-weighted) and cross-entropy over validation batches, from
    ``logits_fn(batch) -> (logits (B, L, V), targets (B, L))``; empty without batches."""
    from restorevar.analysis.health import per_scale_accuracy

    accs, losses = [], []
    for b in batches:
        logits, target = logits_fn(b)
        losses.append(F.cross_entropy(logits.flatten(0, 1), target.flatten()).item())
        accs.append(per_scale_accuracy(logits, target, patch_nums))
    if not accs:
        return {}
    per_scale = [sum(a[k] for a in accs) / len(accs) for k in range(len(patch_nums))]
    weights = [pn * pn for pn in patch_nums]
    return {**{f"val_acc_scale_{k}": v for k, v in enumerate(per_scale)},
            "val_acc": sum(w * a for w, a in zip(weights, per_scale)) / sum(weights),
            "val_loss": sum(losses) / len(losses)}


def val_batches(ds: PairedDataset, val_idx: list[int], batch_size: int, max_batches: int, device) -> list[dict]:
    """Fixed validation batches (epoch 0 crops), the same at every evaluation."""
    out = []
    for b in range(min(max_batches, math.ceil(len(val_idx) / batch_size))):
        items = [ds.item(i, epoch=0) for i in val_idx[b * batch_size:(b + 1) * batch_size]]
        items = [it for it in items if it is not None]
        if items:
            out.append({k: (torch.stack([it[k] for it in items]).to(device) if isinstance(items[0][k], torch.Tensor)
                            else [it[k] for it in items]) for k in items[0]})
    return out


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def save_train_checkpoint(run_dir: Path, *, model_cfg, components, step, optimizers, schedulers, train_cfg,
                          extra=None) -> Path:
    path = Path(run_dir) / CKPT_NAME
    save_checkpoint(path, config=model_cfg, components=components, step=step,
                    optimizer={k: o.state_dict() for k, o in optimizers.items()},
                    scheduler={k: s.state_dict() for k, s in schedulers.items()}, rng=rng_state(),
                    meta={"train_config": train_cfg, "extra": extra or {}})
    return path


def resume_if_possible(run_dir: Path, modules: dict[str, torch.nn.Module], optimizers, schedulers) -> TrainState:
    """Load ``run_dir/last.pt`` if present; returns the step to continue from (0 for a fresh start)."""
    path = Path(run_dir) / CKPT_NAME
    if not path.exists():
        return TrainState()
    ck = load_checkpoint(path)
    for name, m in modules.items():
        # a run folder left by another model config: one line naming the key, not a size-mismatch dump
        check_weights(m, ck["components"].get(name), name, path)
        m.load_state_dict(ck["components"][name])
    for k, o in optimizers.items():
        o.load_state_dict(ck["optimizer"][k])
    for k, s in schedulers.items():
        s.load_state_dict(ck["scheduler"][k])
    set_rng_state(ck["rng"])
    return TrainState(ck["step"], ck["meta"].get("extra", {}))


def progress_line(step: int, total: int, steps_per_s: float, metrics: dict[str, float]) -> str:
    """One line per log step (trials run in Ray workers, where a redrawn bar turns to noise)."""
    eta = (total - step) / max(steps_per_s, 1e-9)
    shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k in ("loss", "l1", "acc", "aux_loss", "lr"))
    return (f"step {step}/{total} ({100 * step / total:.0f}%) {steps_per_s:.2f} step/s "
            f"ETA {int(eta // 60)}m{int(eta % 60):02d}s {shown}")


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def rate(self, n: int) -> float:
        return n / max(time.perf_counter() - self.t0, 1e-9)


# ------------------------------------------------------------------------------------------------
# The loop every trainer runs
# ------------------------------------------------------------------------------------------------
# Wall-clock rates are reported but kept out of checkpoints: a run and its resumed twin then write the same
# bytes, and DVC sees nothing new downstream of a stage that resumed after a kill.
RATES = ("images_per_s",)


def run_loop(
    *,
    run_dir: Path,
    loop: LoopConfig,
    model_cfg: RestoreVARConfig,
    train_cfg: dict[str, Any],
    trained: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    step_fn: Callable[[int], dict[str, float]],
    eval_fn: Callable[[], dict[str, float]],
    components: Callable[[], dict[str, dict[str, torch.Tensor]]],
    report: Reporter,
    images_per_step: int,
    resume_modules: dict[str, torch.nn.Module] | None = None,
    counters: dict[str, int] | None = None,
    lr_fn: Callable[[int], float] | None = None,
) -> dict[str, float]:
    """Resume, then train to ``loop.steps``: log, evaluate and checkpoint on their cadences.

    ``trained`` are the modules whose weights (and optimizers) the checkpoint restores on resume;
    ``components`` gives what the checkpoint exports (frozen parts included, so it is self-contained);
    ``resume_modules`` maps those exported names back to modules when they differ from ``trained``'s
    (the decoder trains inside the exported VQ-VAE). ``counters`` are a trainer's running counts, updated in
    place by its step function: each checkpoint saves them, and a resumed run continues from them. ``lr_fn`` is
    the LR multiplier of each step when a trainer follows another schedule than ``lr_lambda``'s.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, lr_fn or lr_lambda(loop)) for k, o in optimizers.items()}
    state = resume_if_possible(run_dir, resume_modules or trained, optimizers, schedulers)
    step, last = state.step, dict(state.extra.get("last_metrics", {}))
    if counters is not None:
        counters.update(state.extra.get("counters", {}))
    ranks = Ranks.current()  # with several, rank 0 alone evaluates, prints and writes the checkpoints
    if step and ranks.leader:
        print(f"resumed from step {step}/{loop.steps} ({run_dir / CKPT_NAME})", flush=True)
    if step:  # a checkpoint's report follows its save, and a kill between the two lost it: it is made again
        # (a reporter keeps a step's last report), on every rank alike as a launcher's report may be a barrier
        report(step, dict(last), run_dir / CKPT_NAME if ranks.leader else None)
    timer, done_here = Timer(), 0
    while step < loop.steps:
        for m in trained.values():
            m.train()
        ranks.seed_step(loop.seed, step)
        metrics = step_fn(step)
        with warnings.catch_warnings():  # an optimizer idle by design (discriminator before its start) is fine
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
            for s in schedulers.values():
                s.step()
        step += 1
        done_here += 1
        final = step == loop.steps
        if step % loop.log_every == 0 or final:
            metrics = ranks.average_metrics({k: float(v) for k, v in metrics.items()})
            metrics["lr"] = schedulers[next(iter(schedulers))].get_last_lr()[0]
            metrics["images_per_s"] = timer.rate(done_here * images_per_step)
            last.update(metrics)
            if ranks.leader:
                print(progress_line(step, loop.steps, timer.rate(done_here), metrics), flush=True)
        if (step % loop.eval_every == 0 or final) and ranks.leader:
            for m in trained.values():
                m.eval()
            with torch.no_grad():
                last.update({k: float(v) for k, v in eval_fn().items()})
        ckpt, ckpt_step = None, step % loop.ckpt_every == 0 or final
        if ckpt_step and ranks.leader:
            ckpt = save_train_checkpoint(run_dir, model_cfg=model_cfg, components=components(), step=step,
                                         optimizers=optimizers, schedulers=schedulers, train_cfg=train_cfg,
                                         extra={"last_metrics": {k: v for k, v in last.items() if k not in RATES},
                                                **({"counters": dict(counters)} if counters is not None else {})})
        if step % loop.log_every == 0 or ckpt_step:  # every rank alike: a launcher's report may be a barrier
            report(step, dict(last), ckpt)
    return last


def export_untrained(*, run_dir: Path, loop: LoopConfig, model_cfg: RestoreVARConfig, train_cfg: dict[str, Any],
                     eval_fn: Callable[[], dict[str, float]],
                     components: Callable[[], dict[str, dict[str, torch.Tensor]]], report: Reporter) -> dict[str, float]:
    """A stage with nothing to learn (a frozen tokenizer, refiner 'none'): one evaluation, then the checkpoint,
    through the same loop, so it is reported and resumable like every other stage."""
    once = LoopConfig(**{**asdict(loop), "steps": 1, "ckpt_every": 1, "eval_every": 1, "log_every": 1})
    return run_loop(run_dir=Path(run_dir), loop=once, model_cfg=model_cfg, train_cfg=train_cfg, trained={},
                    optimizers={"none": torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=0.0)},
                    step_fn=lambda step: {}, eval_fn=eval_fn, components=components, report=report,
                    images_per_step=0)


@dataclass
class TrainRun:
    """One trainer's run, set up the way every trainer starts: its config checked, the device picked, TF32 set,
    every RNG seeded from ``loop.seed`` (before any model is built, so initial weights follow the seed) and the
    model config built once. ``loop`` and ``export_untrained`` pass the run's own settings to the shared loop."""
    cfg: Any  # the trainer's config: a dataclass with ``loop`` (LoopConfig), ``model`` (ModelRef) and validate()
    run_dir: Path
    report: Reporter
    device: torch.device
    model_cfg: RestoreVARConfig
    ranks: Ranks

    @classmethod
    def setup(cls, cfg: Any, run_dir: str | Path, report: Reporter) -> TrainRun:
        cfg.validate()
        device = pick_device(cfg.loop.device)
        set_tf32(device, cfg.loop.tf32)
        seed_rngs(cfg.loop.seed)
        return cls(cfg, Path(run_dir), report, device, cfg.model.build_config(), Ranks.current())

    @property
    def amp(self) -> bool:
        return self.device.type == "cuda" and self.cfg.loop.amp

    def data(self) -> tuple[Any, list[dict]]:
        """The step-indexed training batches and the fixed validation batches."""
        return make_train_val(self.cfg.data, self.cfg.loop, self.device)

    def loop(self, **kwargs: Any) -> dict[str, float]:
        """``run_loop`` with this run's folder, loop, configs, reporter and images per step."""
        return run_loop(run_dir=self.run_dir, loop=self.cfg.loop, model_cfg=self.model_cfg,
                        train_cfg=asdict(self.cfg), report=self.report, images_per_step=self.cfg.loop.batch_size,
                        **kwargs)

    def export_untrained(self, **kwargs: Any) -> dict[str, float]:
        return export_untrained(run_dir=self.run_dir, loop=self.cfg.loop, model_cfg=self.model_cfg,
                                train_cfg=asdict(self.cfg), report=self.report, **kwargs)


def frozen(module: torch.nn.Module) -> torch.nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def load_component(model, path: str | Path, names: list[str], any_resolution: bool = False) -> None:
    from restorevar.checkpoint import load_components

    load_components(model, load_checkpoint(path), names, path, any_resolution)


def load_vqvae(model_cfg: RestoreVARConfig, path: str | Path):
    """Just the VQ-VAE of a checkpoint (no transformer is built)."""
    from types import SimpleNamespace

    from restorevar.models import VQVAE

    vae = VQVAE(model_cfg.vqvae)
    load_component(SimpleNamespace(cfg=model_cfg, vqvae=vae), path, ["vqvae"])
    return vae
