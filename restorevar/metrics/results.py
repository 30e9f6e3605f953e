"""The long per-image table: one row per (method, image, metric), with its protocol id.

One Parquet file per method under ``results/per_image/``; CSV is read as well so a user can hand-edit or
drop in rows from elsewhere. Every column but ``value`` is read as text: pandas would read the ids "01" and
"1" as one number, and "NA" as a missing value, pairing two images as one.
"""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pandas as pd

from restorevar.errors import UserError
from restorevar.fileio import Refusals, atomic_write, input_file, open_regular, read_regular_text

COLUMNS = ["method", "dataset", "degradation", "image_id", "metric", "value", "protocol"]
RESULTS: Refusals = dataclasses.replace(
    input_file("results file"), folder="results file {path} is a folder; give the .parquet/.csv files inside it")


def write_rows(path: str | Path, rows: list[dict]) -> None:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["value"] = df["value"].astype("float64")
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


NAN_SPELLINGS = {"nan", "+nan", "-nan"}  # a value written as NaN is a number (refused later as not finite)


def _values(text: pd.Series) -> pd.Series:
    """The value column from text: numbers as float64; a text that is no number stays as written, so that
    the error names it ('ten', an empty cell)."""
    num = pd.to_numeric(text, errors="coerce")
    words = num.isna() & ~text.str.strip().str.lower().isin(NAN_SPELLINGS)
    if not words.any():
        return num.astype("float64")
    return num.astype(object).where(~words, text)


def _read_one(f: Path) -> pd.DataFrame:
    if f.suffix == ".parquet":
        # a regular file, opened without blocking (pandas would wait for ever on a FIFO), read from that handle
        with open_regular(f, RESULTS) as handle:
            try:
                df = pd.read_parquet(handle)
            except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
                raise UserError(f"cannot read results file {f} (corrupt?): {e}; give a file the evaluate stage "
                                "wrote") from None
        for c in df.columns:  # ids as text, whatever type the writer gave them
            if c != "value" and df[c].dtype != object:
                df[c] = df[c].astype(str)
        return df
    text = read_regular_text(f, "results file")  # a FIFO, a folder, non-UTF-8 bytes: a one-line error
    try:
        # every column as written: pandas would read ids "01" and "1" as the number 1, and "NA" as missing
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001 - pandas raises several types for a malformed CSV
        raise UserError(f"cannot read results file {f} (corrupt?): {e}; give a CSV with a header row") from None
    if "value" in df.columns:
        df["value"] = _values(df["value"])
    return df


def read_results(path: str | Path) -> pd.DataFrame:
    """The long per-image table from a folder of .parquet/.csv files, or from one such file, with every
    column but ``value`` as text (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"no results at {path}; run the evaluate stage (dvc repro evaluate) first")
    files = sorted(path.glob("*.parquet")) + sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise UserError(f"{path} holds no .parquet or .csv results; run the evaluate stage first")
    frames = []
    for f in files:
        df = _read_one(f)
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise UserError(f"{f} lacks columns {', '.join(missing)}; expected {', '.join(COLUMNS)}")
        frames.append(df[COLUMNS])
    return pd.concat(frames, ignore_index=True)


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
