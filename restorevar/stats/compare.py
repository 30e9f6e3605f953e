"""Compare two methods on one metric from the long per-image table: per stratum, pooled and dataset-weighted.

A stratum is one (dataset, degradation) pair: a real dataset holds one degradation, and the synthetic
benchmark is split by degradation so that each counts equally in the weighted test.

Images pair up by their ids as text (``restorevar.metrics.results.read_results``), so ids "01" and "1" stay
two images.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from restorevar.errors import UserError
from restorevar.stats.paired import paired_test
from restorevar.stats.weighted import dataset_weighted_test

KEY = ["dataset", "degradation", "image_id"]
def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values; NaN entries stay NaN and do not count in the family."""
    from statsmodels.stats.multitest import multipletests

    finite = [i for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    out = [float("nan")] * len(pvalues)
    if finite:
        adj = multipletests([pvalues[i] for i in finite], method="holm")[1]
        for i, p in zip(finite, adj):
            out[i] = float(p)
    return out


def pick_protocol(df: pd.DataFrame, metric: str, protocol: str | None) -> str:
    protos = sorted(df.loc[df.metric == metric, "protocol"].unique())
    if protocol is not None:
        if protocol not in protos:
            raise UserError(f"no '{metric}' results under protocol {protocol!r}; present: {', '.join(protos) or 'none'}")
        return protocol
    if not protos:
        raise UserError(f"no results for metric '{metric}'; metrics present: {', '.join(sorted(df.metric.unique()))}")
    if len(protos) > 1:
        raise UserError(f"'{metric}' was measured under several protocols ({', '.join(protos)}); "
                        "pick one with --protocol: numbers from different protocols are never mixed")
    return protos[0]


def _check_rows(sel: pd.DataFrame, metric: str, proto: str) -> None:
    """One finite value per (method, image): a NaN or a text value has no difference to test, and a repeated
    image would be paired with every copy of its partner."""
    values = pd.to_numeric(sel["value"], errors="coerce").astype("float64")
    bad = ~np.isfinite(values.to_numpy())
    if bad.any():
        r = sel[bad].iloc[0]
        shown = repr(r.value) if isinstance(r.value, str) else str(r.value)  # 'ten', nan, inf
        raise UserError(f"{r.method}: '{metric}' value {shown} of {r.dataset}/{r.degradation} image "
                        f"{r.image_id!r} is not a finite number ({int(bad.sum())} such row(s) under {proto}); "
                        "fix or remove those rows in the results")
    dup = sel.duplicated(["method", *KEY], keep=False)
    if dup.any():
        r = sel[dup].iloc[0]
        n = int((sel[dup][["method", *KEY]] == r[["method", *KEY]]).all(axis=1).sum())
        raise UserError(f"{r.method} has {n} '{metric}' rows for {r.dataset}/{r.degradation} image {r.image_id!r} "
                        f"under {proto}; keep one row per image (is the method in two results files?)")


def check_settings(confidence: float, n_boot: int, n_perm: int, seed: int) -> None:
    """The resampling settings, checked before any work (the same bounds as the pipeline's stats params)."""
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise UserError(f"confidence must lie strictly between 0 and 1, got {confidence} (e.g. --confidence 0.95)")
    for name, n in (("n_boot", n_boot), ("n_perm", n_perm)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 100:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{name} must be an integer >= 100 (resamples for the interval and the test), got {n}; "
                            f"e.g. {flag} 2000")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be an integer >= 0, got {seed} (--seed)")


def paired_frame(df: pd.DataFrame, a: str, b: str, metric: str, protocol: str | None = None) -> tuple[pd.DataFrame, str]:
    """Rows of images scored for both methods: KEY columns plus ``a`` and ``b`` values."""
    methods = set(df.method.unique())
    for m in (a, b):
        if m not in methods:
            raise UserError(f"method {m!r} is not in the results; present: {', '.join(sorted(methods))}")
    proto = pick_protocol(df[df.method.isin([a, b])], metric, protocol)
    sel = df[(df.metric == metric) & (df.protocol == proto) & df.method.isin([a, b])].copy()
    _check_rows(sel, metric, proto)
    sel["value"] = pd.to_numeric(sel["value"]).astype("float64")
    left = sel[sel.method == a].set_index(KEY)["value"].rename("a")
    right = sel[sel.method == b].set_index(KEY)["value"].rename("b")
    both = pd.concat([left, right], axis=1, join="inner").reset_index()
    if both.empty:
        raise UserError(f"{a} and {b} share no images scored with '{metric}' under {proto}")
    return both, proto


def compare_methods(df: pd.DataFrame, a: str, b: str, metric: str, protocol: str | None = None,
                    confidence: float = 0.95, n_boot: int = 2000, n_perm: int = 10000, seed: int = 0) -> dict[str, Any]:
    check_settings(confidence, n_boot, n_perm, seed)
    both, proto = paired_frame(df, a, b, metric, protocol)
    strata = []
    diffs: dict[str, np.ndarray] = {}
    for (ds, deg), g in both.groupby(["dataset", "degradation"], sort=True):
        r = paired_test(g.a.to_numpy(), g.b.to_numpy(), confidence, n_boot, seed).to_dict()
        strata.append({"dataset": ds, "degradation": deg, **r})
        diffs[f"{ds}/{deg}"] = (g.a - g.b).to_numpy()
    pooled = paired_test(both.a.to_numpy(), both.b.to_numpy(), confidence, n_boot, seed).to_dict()
    weighted = dataset_weighted_test(diffs, confidence, n_boot=max(n_boot, 1000), n_perm=n_perm, seed=seed).to_dict()
    n_a = int(((df.method == a) & (df.metric == metric) & (df.protocol == proto)).sum())
    n_b = int(((df.method == b) & (df.metric == metric) & (df.protocol == proto)).sum())
    return {"a": a, "b": b, "metric": metric, "protocol": proto, "difference": f"{a} - {b}",
            "unmatched": {a: n_a - len(both), b: n_b - len(both)},
            "strata": strata, "pooled": pooled, "weighted": weighted}


def comparison_table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per stratum, then 'all (pooled)' and 'all (dataset-weighted)'; Holm across the table's rows."""
    rows = []
    for s in result["strata"]:
        rows.append({"group": f"{s['dataset']}/{s['degradation']}", "n": s["n"], "mean A": s["mean_a"],
                     "mean B": s["mean_b"], "A - B": s["mean_diff"], "95% CI (t)": s["ci_t"],
                     "95% CI (BCa)": s["ci_bca"], "p (t)": s["p_t"], "p (Wilcoxon)": s["p_wilcoxon"],
                     "d_z": s["effect_dz"]})
    p = result["pooled"]
    rows.append({"group": "all (pooled)", "n": p["n"], "mean A": p["mean_a"], "mean B": p["mean_b"],
                 "A - B": p["mean_diff"], "95% CI (t)": p["ci_t"], "95% CI (BCa)": p["ci_bca"], "p (t)": p["p_t"],
                 "p (Wilcoxon)": p["p_wilcoxon"], "d_z": p["effect_dz"]})
    w = result["weighted"]
    for r in rows:
        r["p (sign-flip)"] = float("nan")
    rows.append({"group": "all (dataset-weighted)", "n": w["n"], "mean A": float("nan"), "mean B": float("nan"),
                 "A - B": w["mean_diff"], "95% CI (t)": (float("nan"), float("nan")),
                 "95% CI (BCa)": w["ci"], "p (t)": float("nan"), "p (Wilcoxon)": float("nan"), "d_z": float("nan"),
                 "p (sign-flip)": w["p_perm"]})
    df = pd.DataFrame(rows).rename(columns={"95% CI (BCa)": "95% CI (BCa; weighted: stratified bootstrap)"})
    df["p (t), Holm"] = holm(list(df["p (t)"]))
    df["p (Wilcoxon), Holm"] = holm(list(df["p (Wilcoxon)"]))
    return df


def format_table(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Strings for printing: intervals as [lo, hi], p-values in 3 significant digits."""
    out = df.copy()
    for c in out.columns:
        if c.startswith("95% CI"):
            out[c] = [("—" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:.{digits}f}, {hi:.{digits}f}]")
                      for lo, hi in out[c]]
        elif c.startswith("p "):
            out[c] = ["—" if not math.isfinite(v) else f"{v:.3g}" for v in out[c]]
        elif c in ("mean A", "mean B", "A - B", "d_z"):
            out[c] = ["—" if not math.isfinite(v) else f"{v:.{digits}f}" for v in out[c]]
    return out
