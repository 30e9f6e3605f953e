"""A variant effect across training seeds: what a paired per-image test cannot see.

The per-image tests (``paired.py``) treat the test images as the only source of randomness, so one training
run's luck is reported with a tiny p-value. With K seeds per variant, each seed gives its own mean paired
difference (variant A trained with seed s against variant B trained with seed s, on the same images), and
the effect is estimated over those K values with a t interval on K - 1 degrees of freedom. This is the "t
over seeds" of Bouthillier et al. (MLSys 2021): the K per-seed means are independent draws of the training
process, so its width holds the seed-to-seed variance, and correlation between images cannot shrink it.
Every seed is scored on the same test images, so the interval is conditional on them: it answers "would
training again change the result", and the within-seed per-image tests answer "would other test images".
Its price is few degrees of freedom: with K = 2 the t quantile is 12.7, so only an effect far above the seed
noise is called. (A mixed model with crossed image and seed effects would pool both, but with two or three
seeds its seed variance is barely estimable; the t interval states its assumptions plainly.)

A verdict names a direction only when the across-seed interval excludes zero: "supported" (the paper's
choice is better), "contradicted" (it is worse) or "inconclusive".
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from restorevar.metrics.iqa import HIGHER_IS_BETTER
from restorevar.metrics.results import summary as summary_means

# A trained baseline is evaluated once per training seed, each run as a method of its own: "<name>_seed<k>".
SEEDED = re.compile(r"^(?P<base>.+)_seed(?P<seed>\d+)$")


def seed_method(base: str, seed: int) -> str:
    return f"{base}_seed{seed}"


ZERO_SPREAD = ("no interval: every seed gave the same mean difference, so the seeds did not vary training "
               "(check that the seed reaches the trainer)")


@dataclass
class SeedResult:
    n_seeds: int
    n_images: int  # per seed (the smallest, if they differ)
    per_seed_diff: dict[str, float]  # seed -> mean over images of (a - b)
    mean_diff: float
    between_seed_sd: float  # SD of the per-seed means: the noise floor of one training run
    ci: tuple[float, float]  # t interval over the per-seed means, K - 1 degrees of freedom
    p: float  # one-sample t-test of the per-seed means against 0
    confidence: float
    method: str = "t interval over per-seed mean paired differences (K - 1 df)"

    def to_dict(self) -> dict:
        return asdict(self)


def seed_interval(per_seed: dict[str, float], n_images: int = 0, confidence: float = 0.95) -> SeedResult:
    """The t interval over per-seed mean differences (seed -> that seed's mean of a - b over the images)."""
    x = np.array(list(per_seed.values()), dtype="float64")
    k = x.size
    mean = float(x.mean()) if k else float("nan")
    if k < 2:
        return SeedResult(k, n_images, per_seed, mean, float("nan"), (float("nan"), float("nan")), float("nan"),
                          confidence)
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        # Seeds that agree to the last bit did not vary training (a seed that never reaches the trainer, or
        # a run reused): the spread is unmeasured, not zero, so there is no interval and no verdict.
        return SeedResult(k, n_images, per_seed, mean, 0.0, (float("nan"), float("nan")), float("nan"), confidence,
                          method=ZERO_SPREAD)
    t = stats.ttest_1samp(x, 0.0)
    ci = t.confidence_interval(confidence)
    return SeedResult(k, n_images, per_seed, mean, sd, (float(ci.low), float(ci.high)), float(t.pvalue), confidence)


def across_seeds(df: pd.DataFrame, a: str, b: str, metric: str, confidence: float = 0.95) -> SeedResult:
    """The effect ``a - b`` on ``metric`` across seeds, from per-image rows with columns method, seed,
    dataset, degradation, image_id, metric, value. Images pair up within a seed; seeds missing a method are
    dropped. A seed's value is its mean difference over images (the pipeline passes dataset-weighted
    per-seed means to ``seed_interval`` instead)."""
    need = {"method", "seed", "dataset", "degradation", "image_id", "metric", "value"}
    if missing := need - set(df.columns):
        raise ValueError(f"per-image rows lack {sorted(missing)}")
    d = df[(df.metric == metric) & df.method.isin([a, b])]
    key = ["seed", "dataset", "degradation", "image_id"]
    wide = d.pivot_table(index=key, columns="method", values="value", aggfunc="first").dropna()
    if a not in wide.columns or b not in wide.columns:
        raise ValueError(f"no paired {metric} rows of {a} and {b}")
    diff = (wide[a] - wide[b]).groupby(level="seed")
    per_seed = {str(s): float(v) for s, v in diff.mean().items()}
    counts = diff.size()
    return seed_interval(per_seed, int(counts.min()) if len(counts) else 0, confidence)


def seed_verdict(r: SeedResult, higher_is_better: bool) -> str:
    """'supported', 'contradicted' or 'inconclusive' for the claim that ``a`` beats ``b``."""
    lo, hi = r.ci
    if r.n_seeds < 2 or not np.isfinite(lo):
        return "inconclusive"
    if lo > 0 or hi < 0:
        a_better = (lo > 0) == higher_is_better
        return "supported" if a_better else "contradicted"
    return "inconclusive"


def across_seed_comparisons(comparisons: list[dict], variants: list[str], confidence: float) -> list[dict]:
    """Each (metric, a - b) over the seeds, from the within-seed comparisons (``compare_methods`` results with
    a "seed" key): a t interval over the seeds' dataset-weighted mean differences.

    The interval's level is Bonferroni-corrected over the family's comparisons between trained variants on
    that metric (a verdict holds for all of them at once); a comparison with a seed-independent method
    (the tokenizer's own decoding) gets the plain level."""
    by: dict[tuple[str, str, str], dict[str, float]] = {}
    n_images: dict[tuple[str, str, str], int] = {}
    for c in comparisons:
        key = (c["metric"], c["a"], c["b"])
        by.setdefault(key, {})[str(c["seed"])] = c["weighted"]["mean_diff"]
        n_images[key] = c["weighted"]["n"]
    family = {m: sum(1 for (mm, _, b) in by if mm == m and b in variants) for m, _, _ in by}
    out = []
    for (metric, a, b), per_seed in by.items():
        m = family[metric] if b in variants else 1
        level = 1 - (1 - confidence) / max(m, 1)
        r = seed_interval(per_seed, n_images[metric, a, b], level)
        out.append({"metric": metric, "a": a, "b": b, "difference": f"{a} - {b}", "family_size": m,
                    "verdict": seed_verdict(r, HIGHER_IS_BETTER[metric]), **r.to_dict()})
    return out


def against_seeded(comparisons: list[dict], confidence: float) -> list[dict]:
    """``a - <name>`` across the training seeds of a baseline evaluated once per seed (methods "<name>_seed<k>"),
    from the within-seed comparisons (``compare_methods`` results): overall from each seed's dataset-weighted mean
    difference, and per stratum from each seed's mean difference on that dataset and degradation, each a t
    interval over the seeds (K - 1 df) at the plain level, with the verdict that ``a`` is better ("supported"),
    worse ("contradicted") or neither."""
    groups: dict[tuple[str, str, str], dict[str, dict]] = {}
    for c in comparisons:
        if m := SEEDED.match(c["b"]):
            groups.setdefault((c["metric"], c["a"], m["base"]), {})[m["seed"]] = c
    out = []
    for (metric, a, base), by_seed in groups.items():
        rows = [("overall", {k: c["weighted"]["mean_diff"] for k, c in by_seed.items()},
                 min(c["weighted"]["n"] for c in by_seed.values()))]
        strata: dict[str, dict[str, float]] = {}
        sizes: dict[str, int] = {}
        for k, c in by_seed.items():
            for st in c["strata"]:
                group = f"{st['dataset']}/{st['degradation']}"
                strata.setdefault(group, {})[k] = st["mean_diff"]
                sizes[group] = min(sizes.get(group, st["n"]), st["n"])
        rows += [(group, per_seed, sizes[group]) for group, per_seed in sorted(strata.items())]
        for group, per_seed, n in rows:
            r = seed_interval(per_seed, n, confidence)
            out.append({"metric": metric, "a": a, "b": base, "group": group, "difference": f"{a} - {base}",
                        "verdict": seed_verdict(r, HIGHER_IS_BETTER[metric]), **r.to_dict()})
    return out


def seed_means(frames: dict[Any, pd.DataFrame]) -> dict:
    """For DVC metrics and regression baselines, from each seed's per-image rows:
    ``{protocol: {method: {metric: {mean, seed_sd, seeds}}}}``. A seed's value is its dataset-weighted mean
    (the "overall" of ``restorevar.metrics.results.summary``); SD is over seeds (0 for one seed)."""
    values: dict = {}
    for df in frames.values():
        for proto, methods in summary_means(df).items():
            for method, entry in methods.items():
                for metric, v in entry["overall"].items():
                    values.setdefault(proto, {}).setdefault(method, {}).setdefault(metric, []).append(v)
    return {proto: {method: {metric: {"mean": round(float(np.mean(v)), 5),
                                      "seed_sd": round(float(np.std(v, ddof=1)), 5) if len(v) > 1 else 0.0,
                                      "seeds": len(v)}
                             for metric, v in metrics.items()}
                    for method, metrics in methods.items()}
            for proto, methods in values.items()}
