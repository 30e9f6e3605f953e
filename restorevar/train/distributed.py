"""Data parallelism for the trainers: one step's batch shared out among the processes of a torch.distributed
group (as a launcher such as Ray Train or torchrun sets it up), gradients averaged before every update.

With one process, or none started, every function here does nothing, so a single-process run is what it
was before, bit for bit. With several ranks:

- the global batch of step s stays ``loop.batch_size``: rank r builds positions [r*B/W, (r+1)*B/W) of the
  batch a single process would build (a batch is a pure function of (seed, s));
- each rank's loss is the mean over its share; the averaged gradient is then the whole batch's mean-loss
  gradient, so every rank takes the same update and the weights stay equal without being broadcast;
- the logged losses are the ranks' mean; only rank 0 evaluates, prints, writes checkpoints and reports;
- each step's random draws (drop-path masks, the refiner's noise, codebook restarts) come from a seed of
  (seed, step, rank): a rank resumed from rank 0's checkpoint draws what it would have drawn, with no
  per-rank RNG state to save.

The gradients are averaged by hand after the backward, not by wrapping the modules in
DistributedDataParallel: the trainers call many entry points of their models besides ``forward``, and DDP's
hooks see only ``forward``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from restorevar.errors import UserError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Ranks:
        """The running process's rank among its group's (0 of 1 when no group is set up)."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def many(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def part(self, batch_size: int) -> slice:
        """This rank's positions in a global batch of ``batch_size``."""
        if batch_size % self.world:
            raise UserError(f"loop.batch_size={batch_size} must be a multiple of the {self.world} workers "
                            "(each takes an equal share of every batch)")
        n = batch_size // self.world
        return slice(self.rank * n, (self.rank + 1) * n)

    # ---- collectives: no-ops with one rank ----
    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")

    def average_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Every rank's gradients replaced by their mean over the ranks, in one all-reduce per dtype."""
        if not self.many:
            return
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for p in params:
            if p.grad is not None:  # the same parameters get gradients on every rank: the same model and loss
                by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
        for grads in by_dtype.values():
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= self.world
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    def average_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """The ranks' mean of each metric (the global batch's, as every share is the same size)."""
        if not self.many:
            return metrics
        keys = sorted(metrics)
        t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    def average_(self, tensor: torch.Tensor) -> None:
        """``tensor`` (a statistic such as a code-usage average) replaced in place by its mean over the ranks."""
        if self.many:
            dist.all_reduce(tensor)
            tensor /= self.world

    def broadcast_(self, *tensors: torch.Tensor) -> None:
        """Rank 0's values copied into every rank's ``tensors`` (after a change only rank 0's counts)."""
        if self.many:
            for t in tensors:
                dist.broadcast(t, 0)

    def seed_step(self, seed: int, step: int) -> None:
        if self.many:
            torch.manual_seed(int(np.random.SeedSequence([seed, step, self.rank]).generate_state(1)[0]))
