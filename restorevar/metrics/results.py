"""The long per-image table: one row per (method, image, metric), with its protocol id.

One Parquet file per method under ``results/per_image/``; CSV is read as well so a user can hand-edit or
drop in rows from elsewhere.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from restorevar.errors import UserError
from restorevar.fileio import atomic_write

COLUMNS = ["method", "dataset", "degradation", "image_id", "metric", "value", "protocol"]


def write_rows(path: str | Path, rows: list[dict]) -> None:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["value"] = df["value"].astype("float64")
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def read_results(path: str | Path) -> pd.DataFrame:
    """All rows under a folder of .parquet/.csv files, or one such file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"no results at {path}; run the evaluate stage (dvc repro evaluate) first")
    files = sorted(path.glob("*.parquet")) + sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise UserError(f"{path} holds no .parquet or .csv results; run the evaluate stage first")
    frames = []
    for f in files:
        try:
            df = pd.read_parquet(f) if f.suffix == ".parquet" else pd.read_csv(f)
        except Exception as e:  # noqa: BLE001 - pyarrow/pandas raise many types for a bad file
            raise UserError(f"cannot read results file {f} (corrupt?): {e}") from None
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise UserError(f"{f} lacks columns {', '.join(missing)}; expected {', '.join(COLUMNS)}")
        frames.append(df[COLUMNS])
    out = pd.concat(frames, ignore_index=True)
    out["image_id"] = out["image_id"].astype(str)
    return out


def summary(df: pd.DataFrame) -> dict:
    """Means for DVC metrics: ``{protocol: {method: {"overall" | "dataset/degradation": {metric: mean}}}}``.

    The protocol is the top key so `dvc metrics diff` never sets numbers from two protocols side by side.
    "overall" weights every stratum equally, as the paper's dataset-weighted averages do.
    """
    out: dict = {}
    for (proto, method), g in df.groupby(["protocol", "method"], sort=True):
        per = g.groupby(["dataset", "degradation", "metric"])["value"].mean()
        entry: dict = {}
        for (ds, deg, metric), v in per.items():
            entry.setdefault(f"{ds}/{deg}", {})[metric] = round(float(v), 5)
        overall = per.groupby(level="metric").mean()
        entry["overall"] = {m: round(float(v), 5) for m, v in overall.items()}
        out.setdefault(proto, {})[method] = dict(sorted(entry.items()))
    return out
