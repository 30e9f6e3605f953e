"""Self-attention KV caches for scale-by-scale generation.

Generation runs one scale at a time and every earlier token is visible, so a cache only ever appends.
Two strategies behind one ``append`` method:
- ``GrowingKVCache``: concatenates (the plain path; every scale copies all earlier keys again).
- ``StaticKVCache``: writes into buffers sized for the whole token sequence once, and hands out views,
  so nothing is reallocated and the addresses stay fixed (what CUDA graphs need).
"""
from __future__ import annotations

import torch


class GrowingKVCache:
    def __init__(self) -> None:
        self.k_BHLD: torch.Tensor | None = None
        self.v_BHLD: torch.Tensor | None = None

    def append(self, k_BHlD: torch.Tensor, v_BHlD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k_BHLD is not None:
            k_BHlD, v_BHlD = torch.cat([self.k_BHLD, k_BHlD], dim=2), torch.cat([self.v_BHLD, v_BHlD], dim=2)
        self.k_BHLD, self.v_BHLD = k_BHlD, v_BHlD
        return k_BHlD, v_BHlD


class StaticKVCache:
    """Preallocated ``(B, H, L_max, D)`` keys and values; allocated on the first append (its dtype and device)."""

    def __init__(self, max_len: int) -> None:
        self.max_len, self.end = max_len, 0
        self.k_BHLD: torch.Tensor | None = None
        self.v_BHLD: torch.Tensor | None = None

    def append(self, k_BHlD: torch.Tensor, v_BHlD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, H, n, D = k_BHlD.shape
        if self.k_BHLD is None:
            self.k_BHLD = k_BHlD.new_empty(B, H, self.max_len, D)
            self.v_BHLD = v_BHlD.new_empty(B, H, self.max_len, v_BHlD.shape[-1])
        if self.end + n > self.max_len:
            raise RuntimeError(f"KV cache holds {self.max_len} tokens; appending {n} after {self.end} overflows it")
        self.k_BHLD[:, :, self.end:self.end + n] = k_BHlD
        self.v_BHLD[:, :, self.end:self.end + n] = v_BHlD
        self.end += n
        return self.k_BHLD[:, :, :self.end], self.v_BHLD[:, :, :self.end]


KVCache = GrowingKVCache | StaticKVCache
