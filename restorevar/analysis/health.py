"""Model health: cheap diagnostics that tell a working RestoreVAR from a broken one.

Each function answers one question about a (possibly half-trained) model:

- is the tokenizer's codebook alive (usage, perplexity per scale) and does it reconstruct (round-trip PSNR)?
- does the transformer predict the clean tokens (teacher-forced accuracy) better than copying the degraded
  image's tokens (the copy baseline)?
- does greedy decoding collapse onto a handful of tokens (distinct greedy tokens)?
- does the transformer use its conditioning at all (the zero-initialised gains, and how many predictions change
  when each image is given another image's degraded conditioning)?

All functions are pure: they run under ``torch.no_grad`` with the model temporarily in eval mode (so dropout
is off and the quantizer's usage EMA is not touched) and restore its train/eval flags afterwards. Images are in
[-1, 1], shape ``(B, 3, H, W)``. ``model_health`` combines everything into flat, MLflow-ready float metrics.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from restorevar.imaging import lowfreq_psnr_per_image, mean_psnr, psnr_per_image

PREFIX = "health/"


def per_scale_accuracy(logits_BLV: torch.Tensor, target_BL: torch.Tensor, patch_nums) -> list[float]:
    """Argmax accuracy of each scale's tokens."""
    hit = (logits_BLV.argmax(-1) == target_BL).float()
    out, begin = [], 0
    for pn in patch_nums:
        out.append(float(hit[:, begin:begin + pn * pn].mean()))
        begin += pn * pn
    return out


@dataclass
class PerScale:
    """One number per scale and one for all scales together (how they combine is the producer's to say)."""

    per_scale: list[float]
    overall: float


@dataclass
class CodebookStats:
    usage_S: list[float]  # distinct codes used at scale k / vocab size
    perplexity_S: list[float]  # exp(entropy) of scale k's code histogram: the effective number of codes
    usage: float  # over the tokens of all scales pooled
    perplexity: float


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    # Per-module flags, not one: a trainer may hold a frozen (eval) tokenizer inside a training model.
    flags = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, was_training in flags.items():
            m.training = was_training


def _inspect(fn):
    """Run ``fn(module, ...)`` without gradients and with ``module`` in eval mode."""
    @functools.wraps(fn)
    def wrapper(module, *args, **kwargs):
        with torch.no_grad(), _eval_mode(module):
            return fn(module, *args, **kwargs)
    return wrapper


def _flat(idx_list: list[torch.Tensor]) -> torch.Tensor:
    """Per-scale maps ``(B, pn, pn)`` -> ``(B, L)``, coarse to fine (the teacher-forcing token order)."""
    return torch.cat([i.flatten(1) for i in idx_list], dim=1)


def _split(x_BL: torch.Tensor, patch_nums) -> tuple[torch.Tensor, ...]:
    return x_BL.split([pn * pn for pn in patch_nums], dim=1)


def _token_weighted(per_scale: list[float], patch_nums) -> float:
    # Every token counts once, so the fine scales dominate, as they do in the training loss.
    weights = [pn * pn for pn in patch_nums]
    return sum(w * v for w, v in zip(weights, per_scale)) / sum(weights)


def _agreement(a_BL: torch.Tensor, b_BL: torch.Tensor, patch_nums) -> PerScale:
    """Fraction of positions where two token sequences agree, per scale and token-weighted overall."""
    per = [float(s.double().mean()) for s in _split(a_BL == b_BL, patch_nums)]
    return PerScale(per, _token_weighted(per, patch_nums))


def _changed(a_BL: torch.Tensor, b_BL: torch.Tensor, patch_nums) -> PerScale:
    same = _agreement(a_BL, b_BL, patch_nums)
    return PerScale([1 - v for v in same.per_scale], 1 - same.overall)


def _stats_from_counts(counts_SV: torch.Tensor) -> CodebookStats:
    def usage_perplexity(counts_V: torch.Tensor) -> tuple[float, float]:
        p_V = counts_V.double() / counts_V.sum()
        p_V = p_V[p_V > 0]  # 0 log 0 = 0
        return p_V.numel() / counts_V.numel(), math.exp(float(-(p_V * p_V.log()).sum()))

    per = [usage_perplexity(c) for c in counts_SV]
    usage, perplexity = usage_perplexity(counts_SV.sum(0))
    return CodebookStats([u for u, _ in per], [p for _, p in per], usage, perplexity)


def _counts(idx_list: list[torch.Tensor], vocab_size: int) -> torch.Tensor:
    return torch.stack([torch.bincount(i.flatten().cpu(), minlength=vocab_size) for i in idx_list])


def _greedy(model, x_deg_B3HW: torch.Tensor, seed: int = 0):
    # top_k = top_p = 0 is generate's greedy argmax; the seed only matters to sampling, so it is inert here.
    return model.transformer.generate(model.condition(x_deg_B3HW), model.vqvae.quantizer, seed=seed)


def _greedy_BL(model, x_deg_B3HW: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return _flat(_greedy(model, x_deg_B3HW, seed).idx_list)


def _rolled(x_B3HW: torch.Tensor) -> torch.Tensor:
    if x_B3HW.shape[0] < 2:
        raise ValueError("swapping conditionings needs at least two images")
    return x_B3HW.roll(1, dims=0)


# ------------------------------------------------------------------------------------------------
# The diagnostics
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def codebook_stats(idx_list: list[torch.Tensor], vocab_size: int) -> CodebookStats:
    """Codebook usage and perplexity of per-scale index maps (any shape per scale)."""
    return _stats_from_counts(_counts(idx_list, vocab_size))


@_inspect
def roundtrip_psnr(vqvae, x_B3HW: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (dB) of the tokenizer's reconstructions: through the quantizer and around it."""
    f_BChw = vqvae.encode(x_B3HW)
    discrete = vqvae.decode(vqvae.quantize(f_BChw).f_hat_BChw)
    return {"discrete": mean_psnr(discrete, x_B3HW), "continuous": mean_psnr(vqvae.decode(f_BChw), x_B3HW)}


def thumbnail_psnr(x_B3HW: torch.Tensor, factor: int) -> float:
    """Mean PSNR (dB) of the bicubic round trip H -> H/factor -> H: a thumbnail with as many pixels as the
    tokenizer's latent. A tokenizer below this bar loses more than 3 numbers per latent pixel would keep, and no
    restoration through it can beat a mild degradation."""
    H, W = x_B3HW.shape[-2:]
    small = F.interpolate(x_B3HW, size=(H // factor, W // factor), mode="bicubic", antialias=True, align_corners=False)
    return mean_psnr(F.interpolate(small, size=(H, W), mode="bicubic", align_corners=False).clamp(-1, 1), x_B3HW)


@_inspect
def teacher_forced_accuracy(model, x_deg_B3HW: torch.Tensor, x_clean_B3HW: torch.Tensor) -> PerScale:
    """Argmax accuracy of the teacher-forced logits against the clean tokens; overall is token-weighted."""
    logits_BLV, target_BL = model.teacher_forcing(x_deg_B3HW, x_clean_B3HW)
    per = per_scale_accuracy(logits_BLV, target_BL, model.transformer.patch_nums)
    return PerScale(per, _token_weighted(per, model.transformer.patch_nums))


@_inspect
def copy_baseline_accuracy(vqvae, x_deg_B3HW: torch.Tensor, x_clean_B3HW: torch.Tensor) -> PerScale:
    """Accuracy of predicting the clean tokens by the degraded image's own tokens: what the transformer must beat."""
    deg_BL, clean_BL = _flat(vqvae.image_to_idx(x_deg_B3HW)), _flat(vqvae.image_to_idx(x_clean_B3HW))
    return _agreement(deg_BL, clean_BL, vqvae.quantizer.patch_nums)


@_inspect
def greedy_distinct_tokens(model, x_deg_B3HW: torch.Tensor, seed: int = 0) -> PerScale:
    """Distinct token ids under greedy decoding, per scale and over all scales (every image together)."""
    idx_BL = _greedy_BL(model, x_deg_B3HW, seed)
    per = [float(s.unique().numel()) for s in _split(idx_BL, model.transformer.patch_nums)]
    return PerScale(per, float(idx_BL.unique().numel()))


@_inspect
def cross_gains(transformer) -> dict[str, float]:
    """The zero-initialised gates on the conditioning: ``cross_gain_i`` per block and ``sos_gain``."""
    out = {f"cross_gain_{i}": float(b.cross_attn.gain) for i, b in enumerate(transformer.blocks)}
    out["sos_gain"] = float(transformer.sos_gain)
    return out


@_inspect
def conditioning_sensitivity(model, x_deg_B3HW: torch.Tensor, x_clean_B3HW: torch.Tensor,
                             x_swap_B3HW: torch.Tensor | None = None, seed: int = 0) -> dict[str, PerScale]:
    """Fraction of predicted tokens that change when image b is conditioned on another degraded image.

    ``x_swap_B3HW`` defaults to the batch rolled by one. ``"greedy"`` compares greedy decodes (a change at a
    coarse scale propagates to the finer ones); ``"tf"`` compares teacher-forced argmaxes, where every scale
    sees the same clean prefix. A transformer that ignores its conditioning scores exactly 0.
    """
    x_swap = _rolled(x_deg_B3HW) if x_swap_B3HW is None else x_swap_B3HW
    pns = model.transformer.patch_nums
    logits_BLV, _ = model.teacher_forcing(x_deg_B3HW, x_clean_B3HW)
    swap_logits_BLV, _ = model.teacher_forcing(x_swap, x_clean_B3HW)
    return {"greedy": _changed(_greedy_BL(model, x_deg_B3HW, seed), _greedy_BL(model, x_swap, seed), pns),
            "tf": _changed(logits_BLV.argmax(-1), swap_logits_BLV.argmax(-1), pns)}


# ------------------------------------------------------------------------------------------------
# Everything at once
# ------------------------------------------------------------------------------------------------
@_inspect
def model_health(model, batches: list[dict[str, torch.Tensor]], seed: int = 0) -> dict[str, float]:
    """Every diagnostic over ``batches`` (dicts with ``degraded`` and ``clean``), as flat float metrics.

    Keys (``{k}`` is a scale index, coarse to fine; ``{i}`` a transformer block; "overall" = all tokens pooled):

    - ``health/n_images``: images evaluated; ``health/patch_num_scale_{k}``: scale k's side length pn_k.
    - ``health/codebook_usage[_scale_{k}]``: distinct codes among the clean images' tokens / vocab size.
    - ``health/codebook_perplexity[_scale_{k}]``: exp(entropy) of that code histogram (1 = one code, V = uniform).
    - ``health/roundtrip_psnr_discrete`` / ``_continuous``: mean PSNR (dB) of clean images decoded from their
      quantized / unquantized latent: the tokenizer's ceiling, and how much of it the quantizer costs.
    - ``health/thumbnail_psnr``: the bicubic thumbnail round trip at the latent's size (``thumbnail_psnr``),
      the bar the continuous round trip must clear.
    - ``health/tf_acc[_scale_{k}]``: teacher-forced argmax accuracy on the clean tokens (overall token-weighted).
    - ``health/copy_acc[_scale_{k}]``: accuracy of copying the degraded image's tokens: the trivial baseline.
    - ``health/greedy_distinct_tokens[_scale_{k}]``: distinct ids in greedy decodes of all images (collapse test).
    - ``health/cond_swap_changed[_scale_{k}]``: fraction of greedy tokens that change when each image gets the
      next image's degraded conditioning (the images rolled by one across all batches); 0 = ignores it.
    - ``health/cond_swap_changed_tf[_scale_{k}]``: the same for teacher-forced argmax predictions.
    - ``health/cross_gain_{i}``, ``health/sos_gain``: the conditioning gates (zero at initialisation).
    - ``health/restored_psnr``: mean PSNR (dB) against the clean image of the greedy tokens decoded by the tokenizer
      (no refiner); ``health/input_psnr``: the degraded input's; ``health/copy_psnr``: the degraded image's own
      tokens decoded (what a model that only copies would get); ``health/restored_minus_input``.
    - ``health/lowfreq_psnr_restored`` / ``_input``: the same on 8 x 8 thumbnails (low-frequency fidelity: do the
      colours and tones follow the image?), and ``health/lowfreq_restored_minus_input``.

    Fractions and accuracies are token-weighted means over all images. ``seed`` goes to ``generate``, whose
    greedy decoding ignores it, so the result depends on the inputs alone. Raises if a value is not finite.
    """
    tr, vq = model.transformer, model.vqvae
    pns, V, S = tr.patch_nums, vq.quantizer.vocab_size, len(tr.patch_nums)
    device = next(model.parameters()).device
    batches = [{k: b[k].to(device) for k in ("degraded", "clean")} for b in batches]
    sizes = [b["degraded"].shape[0] for b in batches]
    # Roll across the whole set, not per batch, so that batches of one image still get a different partner.
    swaps = _rolled(torch.cat([b["degraded"] for b in batches])).split(sizes)
    n = sum(sizes)

    counts_SV = torch.zeros(S, V, dtype=torch.long)
    seen_SV = torch.zeros(S, V, dtype=torch.bool)
    sums: dict[str, list[float]] = {}  # per-scale values summed with weight B, divided by n at the end

    def add(name: str, per_scale: list[float], weight: int) -> None:
        acc = sums.setdefault(name, [0.0] * len(per_scale))
        for k, v in enumerate(per_scale):
            acc[k] += weight * v

    for b, x_swap in zip(batches, swaps):
        deg, clean, B = b["degraded"], b["clean"], b["degraded"].shape[0]
        counts_SV += _counts(vq.image_to_idx(clean), V)
        rt = roundtrip_psnr(vq, clean)
        add("roundtrip_psnr", [rt["discrete"], rt["continuous"]], B)  # two entries, not scales
        add("thumbnail_psnr", [thumbnail_psnr(clean, vq.cfg.downsample)], B)
        logits_BLV, target_BL = model.teacher_forcing(deg, clean)
        add("tf_acc", per_scale_accuracy(logits_BLV, target_BL, pns), B)
        add("copy_acc", copy_baseline_accuracy(vq, deg, clean).per_scale, B)
        gen = _greedy(model, deg, seed)
        greedy_BL = _flat(gen.idx_list)
        restored = vq.decode(gen.f_hat_BChw)
        copy = vq.decode(vq.quantize(vq.encode(deg)).f_hat_BChw)
        add("pixels", [float(psnr_per_image(restored, clean).sum()) / B, float(psnr_per_image(deg, clean).sum()) / B,
                       float(psnr_per_image(copy, clean).sum()) / B,
                       float(lowfreq_psnr_per_image(restored, clean).sum()) / B,
                       float(lowfreq_psnr_per_image(deg, clean).sum()) / B], B)
        for k, s in enumerate(_split(greedy_BL, pns)):
            seen_SV[k, s.flatten().cpu()] = True
        add("cond_swap_changed", _changed(greedy_BL, _greedy_BL(model, x_swap, seed), pns).per_scale, B)
        swap_logits_BLV, _ = model.teacher_forcing(x_swap, clean)
        add("cond_swap_changed_tf", _changed(logits_BLV.argmax(-1), swap_logits_BLV.argmax(-1), pns).per_scale, B)

    out = {"n_images": float(n)}
    out.update({f"patch_num_scale_{k}": float(pn) for k, pn in enumerate(pns)})
    cb = _stats_from_counts(counts_SV)
    per_scale = {"codebook_usage": (cb.usage_S, cb.usage), "codebook_perplexity": (cb.perplexity_S, cb.perplexity),
                 "greedy_distinct_tokens": ([float(s.sum()) for s in seen_SV], float(seen_SV.any(0).sum()))}
    for name in ("tf_acc", "copy_acc", "cond_swap_changed", "cond_swap_changed_tf"):
        mean = [v / n for v in sums[name]]
        per_scale[name] = (mean, _token_weighted(mean, pns))
    for name, (per, overall) in per_scale.items():
        out[name] = overall
        out.update({f"{name}_scale_{k}": v for k, v in enumerate(per)})
    out["roundtrip_psnr_discrete"], out["roundtrip_psnr_continuous"] = (v / n for v in sums["roundtrip_psnr"])
    out["thumbnail_psnr"] = sums["thumbnail_psnr"][0] / n
    (out["restored_psnr"], out["input_psnr"], out["copy_psnr"], out["lowfreq_psnr_restored"],
     out["lowfreq_psnr_input"]) = (v / n for v in sums["pixels"])
    out["restored_minus_input"] = out["restored_psnr"] - out["input_psnr"]
    out["lowfreq_restored_minus_input"] = out["lowfreq_psnr_restored"] - out["lowfreq_psnr_input"]
    out.update(cross_gains(tr))
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"model health: non-finite values for {bad}")
    return {PREFIX + k: float(v) for k, v in out.items()}


def health_table(d: dict[str, float]) -> list[dict[str, float | int]]:
    """One row per scale of a ``model_health`` result, for a report's table."""
    columns = {"codebook_usage": "codebook_usage", "codebook_perplexity": "perplexity", "tf_acc": "tf_acc",
               "copy_acc": "copy_acc", "cond_swap_changed": "swap_changed", "cond_swap_changed_tf": "swap_changed_tf",
               "greedy_distinct_tokens": "greedy_distinct"}
    rows, k = [], 0
    while f"{PREFIX}patch_num_scale_{k}" in d:
        row: dict[str, float | int] = {"scale": k, "patch_num": int(d[f"{PREFIX}patch_num_scale_{k}"])}
        row.update({col: d[f"{PREFIX}{key}_scale_{k}"] for key, col in columns.items()})
        rows.append(row)
        k += 1
    return rows
