"""The inference path behind `restorevar restore`, evaluation and the benchmarks: plain or fast.

``PLAIN`` runs the model the straightforward way, as the reference implementation does: cross-attention
K/V recomputed in every block at every scale, self-attention caches grown by concatenation, fp32,
NCHW convolutions. The fast path (``InferenceOptions()``) computes each image's cross-attention K/V once,
writes into a preallocated KV cache, runs the VQ-VAE's convolutions channels-last and, with
``dtype="bf16"``, runs matmuls and convolutions in bf16 under autocast while the head, the token
accumulation ``f_hat``, the cosine-attention normalisation, RoPE and the residual stream stay fp32.

In fp32 the fast path predicts the same tokens as the plain path; only the convolution algorithms differ
(tests/test_engine.py). bf16 changes results; its agreement is measured by `restorevar bench`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from restorevar.errors import UserError
from restorevar.models.restorevar import RestoreOutput, RestoreVAR
from restorevar.models.transformer import GenerateOutput

DTYPES = ("fp32", "bf16")


@dataclass(frozen=True)
class InferenceOptions:
    dtype: Literal["fp32", "bf16"] = "fp32"
    cross_kv_once: bool = True  # cross-attention K/V computed once per image, not per block and scale
    kv_cache: Literal["static", "growing"] = "static"
    channels_last: bool = True  # VQ-VAE convolutions in NHWC (oneDNN / cuDNN's preferred layout)

    def validate(self) -> None:
        if self.dtype not in DTYPES:
            raise UserError(f"unknown dtype {self.dtype!r}; use one of: {', '.join(DTYPES)}")
        if self.kv_cache not in ("static", "growing"):
            raise UserError(f"kv_cache must be static or growing, got {self.kv_cache!r}")

    @property
    def name(self) -> str:
        return f"{'plain' if self == PLAIN else 'fast'}_{self.dtype}"


PLAIN = InferenceOptions(dtype="fp32", cross_kv_once=False, kv_cache="growing", channels_last=False)


def fast(dtype: str = "fp32") -> InferenceOptions:
    opts = replace(InferenceOptions(), dtype=dtype)
    opts.validate()
    return opts


class Engine:
    """Runs a RestoreVAR with the given options, component by component or end to end.

    The engine sets the VQ-VAE's memory layout in place, so two engines with different ``channels_last``
    must not share one model (the benchmark gives each its own copy).
    """

    def __init__(self, model: RestoreVAR, options: InferenceOptions | None = None):
        self.options = options or InferenceOptions()
        self.options.validate()
        self.model = model.eval()
        self.device = next(model.parameters()).device
        if self.options.dtype == "bf16" and (why := bf16_problem(self.device)):
            raise UserError(f"dtype bf16: {why}; use fp32")
        self.memory_format = torch.channels_last if self.options.channels_last else torch.contiguous_format
        model.vqvae.to(memory_format=self.memory_format)

    def autocast(self):
        """bf16 autocast for the bf16 path, nothing for fp32."""
        if self.options.dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _layout(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return x_BCHW.contiguous(memory_format=self.memory_format)

    # -- components ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x_deg_B3HW: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.model.condition(self._layout(x_deg_B3HW)).float()

    @torch.no_grad()
    def generate(self, cond_BNCv: torch.Tensor, top_k: int = 0, top_p: float = 0.0, temperature: float = 1.0,
                 seed: int | None = None, return_logits: bool = False) -> GenerateOutput:
        with self.autocast():
            return self.model.transformer.generate(
                cond_BNCv, self.model.vqvae.quantizer, top_k=top_k, top_p=top_p, temperature=temperature, seed=seed,
                precompute_cross_kv=self.options.cross_kv_once, kv_cache=self.options.kv_cache,
                return_logits=return_logits)

    @torch.no_grad()
    def refine(self, gen: GenerateOutput, seed: int | None = None) -> torch.Tensor:
        with self.autocast():
            return self.model.refiner.refine(gen.f_hat_BChw, gen.hidden_BLC, seed=seed).float()

    @torch.no_grad()
    def decode(self, f_BChw: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.model.vqvae.decode(self._layout(f_BChw)).float().contiguous()

    # -- end to end ----------------------------------------------------------------------------
    @torch.no_grad()
    def restore(self, x_deg_B3HW: torch.Tensor, top_k: int = 0, top_p: float = 0.0, temperature: float = 1.0,
                seed: int | None = None, return_logits: bool = False) -> RestoreOutput:
        gen = self.generate(self.encode(x_deg_B3HW), top_k, top_p, temperature, seed, return_logits)
        f_cont = self.refine(gen, seed)
        return RestoreOutput(self.decode(f_cont), gen, f_cont)


def bf16_problem(device: torch.device) -> str | None:
    """Why bf16 would not pay off on ``device`` (None if it is supported natively)."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16 support"
    if device.type != "cpu":
        return None
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: let oneDNN decide
        return None
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return None
    return "this CPU has no AVX512-BF16 or AMX, so bf16 would be emulated and slow"
