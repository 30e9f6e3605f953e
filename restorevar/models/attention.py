"""Attention layers of the RestoreVAR transformer.

Both self- and cross-attention L2-normalise q and k and scale q by a learnable per-head factor
(VAR's cosine attention, softmax scale 1), which keeps logits bounded at any sequence length.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from restorevar.models.kv_cache import KVCache
from restorevar.models.rope import apply_rope

Rope = tuple[torch.Tensor, torch.Tensor] | None


class CosineScale(nn.Module):
    """``q <- normalize(q) * exp(min(log s, log max))`` per head; ``k <- normalize(k)``."""

    def __init__(self, n_heads: int, init: float = 4.0, max_scale: float = 100.0):
        super().__init__()
        self.log_scale_1H11 = nn.Parameter(torch.full((1, n_heads, 1, 1), math.log(init)))
        self.max_log = math.log(max_scale)

    # In fp32 even under bf16 autocast: the scale (up to 100) would magnify bf16's normalisation error.
    def q(self, q_BHLD: torch.Tensor) -> torch.Tensor:
        return F.normalize(q_BHLD.float(), dim=-1) * self.log_scale_1H11.float().clamp(max=self.max_log).exp()

    @staticmethod
    def k(k_BHLD: torch.Tensor) -> torch.Tensor:
        return F.normalize(k_BHLD.float(), dim=-1)


def _heads(x_BLC: torch.Tensor, n_heads: int) -> torch.Tensor:
    B, L, C = x_BLC.shape
    return x_BLC.view(B, L, n_heads, C // n_heads).transpose(1, 2)


def _merge(x_BHLD: torch.Tensor) -> torch.Tensor:
    B, H, L, D = x_BHLD.shape
    return x_BHLD.transpose(1, 2).reshape(B, L, H * D)


class SelfAttention(nn.Module):
    def __init__(self, width: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        # q and v carry a bias, k does not: a k bias adds a per-query constant that softmax ignores.
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.cos_scale = CosineScale(n_heads)
        self.proj = nn.Linear(width, width)

    def forward(
        self,
        x_BLC: torch.Tensor,
        rope: Rope,
        mask_LL: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        q, k, v = (_heads(t, self.n_heads) for t in F.linear(x_BLC, self.qkv.weight, bias).chunk(3, dim=-1))
        q, k = self.cos_scale.q(q), self.cos_scale.k(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:  # one scale at a time: everything cached is visible, no mask needed
            k, v = cache.append(k, v)
        out = F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v, attn_mask=mask_LL, scale=1.0)
        return self.proj(_merge(out))


class CrossAttention(nn.Module):
    """Queries from the token stream, keys/values from the conditioning tokens; output gated by ``gain``."""

    def __init__(self, width: int, n_heads: int, eps: float = 1e-5):
        super().__init__()
        self.n_heads = n_heads
        self.norm_q = nn.LayerNorm(width, eps=eps)
        self.norm_kv = nn.LayerNorm(width, eps=eps)
        self.q_proj = nn.Linear(width, width, bias=False)
        self.kv_proj = nn.Linear(width, 2 * width, bias=False)
        self.cos_scale = CosineScale(n_heads)
        self.out_proj = nn.Linear(width, width)
        self.gain = nn.Parameter(torch.zeros(()))  # zero: a pretrained VAR starts out unconditioned

    def compute_kv(self, cond_BNC: torch.Tensor, rope: Rope) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised, rotated keys and values: fixed per image, so inference computes them once."""
        k, v = (_heads(t, self.n_heads) for t in self.kv_proj(self.norm_kv(cond_BNC)).chunk(2, dim=-1))
        k = self.cos_scale.k(k)
        if rope is not None:
            k = apply_rope(k, *rope)
        return k, v

    def read(self, x_BLC: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], rope: Rope) -> torch.Tensor:
        """What the condition says at each query, before the gate (an auxiliary loss can train it directly)."""
        q = _heads(self.q_proj(self.norm_q(x_BLC)), self.n_heads)
        q = self.cos_scale.q(q)
        if rope is not None:
            q = apply_rope(q, *rope)
        k, v = kv
        out = F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v, scale=1.0)
        return self.out_proj(_merge(out))

    def forward(self, x_BLC: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], rope: Rope) -> torch.Tensor:
        return self.gain * self.read(x_BLC, kv, rope)
