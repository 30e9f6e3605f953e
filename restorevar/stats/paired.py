"""One paired comparison: mean difference, t and BCa intervals, paired t-test, Wilcoxon, effect size.

The difference is always ``a - b`` per image, so a positive mean says A scores higher on the metric.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass
class PairedResult:
    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_t: tuple[float, float]
    ci_bca: tuple[float, float]
    p_t: float
    p_wilcoxon: float
    effect_dz: float  # Cohen's d_z: mean difference / SD of the differences
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


def _nan_pair() -> tuple[float, float]:
    return (float("nan"), float("nan"))


def paired_test(a, b, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> PairedResult:
    """Compare paired samples ``a`` and ``b`` (same images, same order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples need equal 1-D shapes, got {a.shape} and {b.shape}")
    if not np.all(np.isfinite(a)) or not np.all(np.isfinite(b)):
        raise ValueError("paired samples contain NaN or infinite values")
    d = a - b
    n = d.size
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return PairedResult(n, float(a.mean()) if n else float("nan"), float(b.mean()) if n else float("nan"),
                            mean, _nan_pair(), _nan_pair(), float("nan"), float("nan"), float("nan"), confidence)
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        # every difference equal: the interval is the point; the tests degenerate (scipy returns NaN or warns)
        p_w = 1.0 if mean == 0.0 else float(stats.wilcoxon(d).pvalue)
        return PairedResult(n, float(a.mean()), float(b.mean()), mean, (mean, mean), (mean, mean),
                            1.0 if mean == 0.0 else 0.0, p_w, 0.0 if mean == 0.0 else float(np.sign(mean) * np.inf),
                            confidence)
    t = stats.ttest_rel(a, b)
    ci = t.confidence_interval(confidence)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=stats.DegenerateDataWarning)
        boot = stats.bootstrap((d,), np.mean, n_resamples=n_boot, confidence_level=confidence, method="BCa",
                               rng=np.random.default_rng(seed))
    if np.all(d == 0):
        p_w = 1.0
    else:
        p_w = float(stats.wilcoxon(d).pvalue)
    return PairedResult(n, float(a.mean()), float(b.mean()), mean, (float(ci.low), float(ci.high)),
                        (float(boot.confidence_interval.low), float(boot.confidence_interval.high)),
                        float(t.pvalue), p_w, mean / sd, confidence)


def mean_ci(x, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``x`` with its t-based confidence interval (the point itself when all values are equal)."""
    x = np.asarray(x, dtype=np.float64)
    m = float(x.mean())
    if x.size < 2:
        return m, float("nan"), float("nan")
    if float(x.std()) == 0.0:
        return m, m, m
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    return m, float(ci.low), float(ci.high)
