"""seaborn figures for the report. Each function writes one PNG and returns its path."""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from restorevar.fileio import atomic_write


def _save(fig, path: Path, dpi: int = 110) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # no Software/date metadata, so the same data gives the same bytes
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight",
                                               metadata={"Software": None}))
    plt.close(fig)
    return path


def metric_bars(df: pd.DataFrame, metric: str, methods: list[str], path: Path, confidence: float = 0.95,
                seed: int = 0) -> Path:
    """Mean per degradation for each method, with bootstrap confidence intervals over images."""
    import seaborn as sns

    d = df[(df.metric == metric) & df.method.isin(methods)].copy()
    d["group"] = d.dataset + "/" + d.degradation
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * d.group.nunique() + 2), 3.6))
    sns.barplot(d, x="group", y="value", hue="method", hue_order=methods, errorbar=("ci", confidence * 100),
                n_boot=1000, seed=seed, ax=ax, palette="deep", capsize=0.08, err_kws={"linewidth": 1})
    ax.set_xlabel("")
    ax.set_ylabel(metric.upper())
    ax.tick_params(axis="x", rotation=30)
    ax.legend(title="", fontsize=8, ncols=min(4, len(methods)))
    ax.set_title(f"{metric.upper()} per degradation (bars: mean; whiskers: {confidence:.0%} bootstrap CI)", fontsize=10)
    return _save(fig, path)


def paired_differences(df: pd.DataFrame, a: str, b: str, metric: str, path: Path) -> Path:
    """Per-image paired differences A - B for each degradation: box plot plus every image as a dot."""
    import seaborn as sns

    d = df[df.metric == metric]
    key = ["dataset", "degradation", "image_id"]
    wide = d[d.method.isin([a, b])].pivot_table(index=key, columns="method", values="value").dropna().reset_index()
    wide["diff"] = wide[a] - wide[b]
    wide["group"] = wide.dataset + "/" + wide.degradation
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * wide.group.nunique() + 2), 3.4))
    with warnings.catch_warnings():  # seaborn 0.13 still passes matplotlib's deprecated `vert`
        warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
        sns.boxplot(wide, x="group", y="diff", color="#cfd8e3", fliersize=0, ax=ax)
    sns.swarmplot(wide, x="group", y="diff", color="#3b5b92", size=3.5, ax=ax)  # deterministic, unlike jitter
    ax.axhline(0, color="#b03030", lw=1, ls="--")
    ax.set_xlabel("")
    ax.set_ylabel(f"{metric.upper()}: {a} − {b}")
    ax.tick_params(axis="x", rotation=30)
    ax.set_title(f"Paired differences per image ({a} − {b}); above the red line {a} is higher", fontsize=10)
    return _save(fig, path)


def image_grid(samples: Path, methods: list[str], path: Path, per_group: int = 2) -> Path | None:
    """Rows: sample images per degradation; columns: input, each method, target."""
    rows = []
    for group in sorted(p for p in samples.glob("*/*") if p.is_dir()):
        for img_dir in sorted(p for p in group.iterdir() if p.is_dir())[:per_group]:
            rows.append((f"{group.parent.name}/{group.name}\n{img_dir.name}", img_dir))
    if not rows:
        return None
    cols = ["input"] + [m for m in methods if m != "identity"] + ["target"]
    cell = 1.0  # inches; at 96 dpi about the size of a 64-128 px test image
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(cell * len(cols) + 1.2, cell * len(rows) + 0.4),
                             squeeze=False)
    for r, (label, img_dir) in enumerate(rows):
        for c, col in enumerate(cols):
            ax = axes[r][c]
            f = img_dir / f"{col}.png"
            if f.exists():
                ax.imshow(np.asarray(Image.open(f).convert("RGB")))
            else:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=8, color="#888")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col, fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return _save(fig, path, dpi=96)


def curves(curves: dict[str, list[dict]], key: str, path: Path, title: str) -> Path:
    """One line per variant: ``key`` against the training step (the mean where several runs, e.g. seeds,
    report the same step, with a band of one SD between them)."""
    import seaborn as sns

    rows = [{"variant": v, "step": r["step"], key: r[key]} for v, rs in curves.items() for r in rs if key in r]
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    sns.lineplot(pd.DataFrame(rows), x="step", y=key, hue="variant", marker="o", errorbar="sd", ax=ax)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
