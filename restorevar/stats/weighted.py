"""The dataset-weighted overall test (the paper's Table 8): every stratum counts equally, whatever its size.

Statistic: the mean over strata of each stratum's mean paired difference. Interval: a stratified bootstrap
(resample images with replacement inside each stratum), percentile method. Test: a stratified sign-flip
permutation test. Under H0 (no difference) each paired difference is as likely to carry either sign, so
flipping signs independently per image gives the null distribution of the statistic; the p-value is
two-sided, exact when there are at most ``exact_max`` images in all, else Monte Carlo with the +1
correction so it is never 0.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class WeightedResult:
    n: int
    n_strata: int
    mean_diff: float
    ci: tuple[float, float]
    p_perm: float
    exact: bool
    n_boot: int
    n_perm: int
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


def _statistic(groups: list[np.ndarray]) -> float:
    return float(np.mean([g.mean() for g in groups]))


def dataset_weighted_test(diffs: dict[str, np.ndarray] | list[np.ndarray], confidence: float = 0.95,
                          n_boot: int = 4000, n_perm: int = 10000, seed: int = 0,
                          exact_max: int = 16) -> WeightedResult:
    """``diffs``: the per-image differences ``a - b`` of each stratum (dataset)."""
    groups = [np.asarray(g, dtype=np.float64).ravel() for g in (diffs.values() if isinstance(diffs, dict) else diffs)]
    groups = [g for g in groups if g.size]
    if not groups:
        raise ValueError("no paired differences to test")
    n = sum(g.size for g in groups)
    obs = _statistic(groups)
    rng = np.random.default_rng(seed)

    boot = np.zeros(n_boot)
    for g in groups:
        boot += g[rng.integers(0, g.size, size=(n_boot, g.size))].mean(axis=1)
    boot /= len(groups)
    alpha = 1 - confidence
    ci = (float(np.quantile(boot, alpha / 2)), float(np.quantile(boot, 1 - alpha / 2)))

    # weight of each image in the statistic: 1 / (n_strata * n_stratum)
    w = np.concatenate([np.full(g.size, 1.0 / (len(groups) * g.size)) for g in groups])
    d = np.concatenate(groups)
    wd = w * d
    tol = 1e-12 * max(1.0, abs(obs))
    if n <= exact_max:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        null = signs @ wd
        p = float(np.mean(np.abs(null) >= abs(obs) - tol))
        exact, draws = True, len(signs)
    else:
        hits = 0
        for start in range(0, n_perm, 2000):
            k = min(2000, n_perm - start)
            signs = rng.choice((-1.0, 1.0), size=(k, n))
            hits += int(np.sum(np.abs(signs @ wd) >= abs(obs) - tol))
        p = (hits + 1) / (n_perm + 1)
        exact, draws = False, n_perm
    return WeightedResult(n, len(groups), obs, ci, p, exact, n_boot, draws, confidence)
