"""A variant effect across training seeds: what a paired per-image test cannot see.

The per-image tests (``paired.py``) treat the test images as the only source of randomness, so one training
run's luck is reported with a tiny p-value. With K seeds per variant, each seed gives its own mean paired
difference (variant A trained with seed s against variant B trained with seed s, on the same images), and
the effect is estimated over those K values with a t interval on K - 1 degrees of freedom. Its width holds
the seed-to-seed variance; the image-level noise enters through each seed's mean. This is the "t over
seeds" of Bouthillier et al. (MLSys 2021): the K per-seed means are independent draws of the training
process, scored on the same test images, so correlation between images cannot shrink the interval. Its
price is few degrees of freedom: with K = 2 the t quantile is 12.7, so only an effect far above the seed
noise is called.

A verdict names a direction only when the across-seed interval excludes zero: "supported" (the paper's
choice is better), "contradicted" (it is worse) or "inconclusive".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats


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


def across_seeds(df: pd.DataFrame, a: str, b: str, metric: str, confidence: float = 0.95) -> SeedResult:
    """The effect ``a - b`` on ``metric`` across seeds, from per-image rows with columns method, seed,
    dataset, degradation, image_id, metric, value. Images pair up within a seed; seeds missing a method are
    dropped."""
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
    x = np.array(list(per_seed.values()))
    k = x.size
    mean = float(x.mean()) if k else float("nan")
    if k < 2:
        return SeedResult(k, int(counts.min()) if k else 0, per_seed, mean, float("nan"),
                          (float("nan"), float("nan")), float("nan"), confidence)
    sd = float(x.std(ddof=1))
    if sd == 0.0:  # every seed agrees exactly: the interval is the point
        return SeedResult(k, int(counts.min()), per_seed, mean, 0.0, (mean, mean), 1.0 if mean == 0 else 0.0,
                          confidence)
    t = stats.ttest_1samp(x, 0.0)
    ci = t.confidence_interval(confidence)
    return SeedResult(k, int(counts.min()), per_seed, mean, sd, (float(ci.low), float(ci.high)), float(t.pvalue),
                      confidence)


def seed_verdict(r: SeedResult, higher_is_better: bool) -> str:
    """'supported', 'contradicted' or 'inconclusive' for the claim that ``a`` beats ``b``."""
    lo, hi = r.ci
    if r.n_seeds < 2 or not np.isfinite(lo):
        return "inconclusive"
    if lo > 0 or hi < 0:
        a_better = (lo > 0) == higher_is_better
        return "supported" if a_better else "contradicted"
    return "inconclusive"
