"""``restorevar stats compare``: per-image results it cannot test (NaN, infinite or text values, an image
scored twice) and resampling settings out of range. Each is one line and exit 2, never a traceback.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from bad_inputs import Case

HEADER = ["method", "dataset", "degradation", "image_id", "metric", "value", "protocol"]
COMPARE = ["stats", "compare", "model", "input", "--metric", "psnr", "--results", "per_image",
           "--n-boot", "200", "--n-perm", "200"]


def _results(tmp: Path, value: str = "21.5", duplicate: bool = False) -> None:
    """``per_image/model.csv`` and ``per_image/input.csv``: six images in two strata; the model's first
    value is ``value`` as written in the CSV, and ``duplicate`` repeats the input's last row."""
    rows = {"model": [], "input": []}
    for i in range(6):
        deg = "haze" if i < 3 else "rain"
        for method, shift in (("model", 1.0), ("input", 0.0)):
            rows[method].append([method, "synth", deg, f"img{i}", "psnr", f"{20 + 0.3 * i + shift:.3f}",
                                 "rgb-crop0-resize32"])
    rows["model"][0][5] = value
    if duplicate:
        rows["input"].append(list(rows["input"][-1]))
    (tmp / "per_image").mkdir()
    for method, body in rows.items():
        with open(tmp / "per_image" / f"{method}.csv", "w", newline="") as f:
            csv.writer(f).writerows([HEADER, *body])


def _case(id_: str, fragment: str, extra: list[str] | None = None, **results) -> Case:
    def setup(tmp: Path) -> list[str]:
        _results(tmp, **results)
        return [*COMPARE, *(extra or [])]

    return Case(id_, setup, fragment)


CASES = [
    _case("stats-compare-nan-value", "'psnr' value nan of synth/haze image 'img0' is not a finite number", value="NaN"),
    _case("stats-compare-inf-value", "'psnr' value inf of synth/haze image 'img0' is not a finite number", value="inf"),
    _case("stats-compare-text-value", "'psnr' value 'ten' of synth/haze image 'img0' is not a finite number",
          value="ten"),
    _case("stats-compare-empty-value", "of synth/haze image 'img0' is not a finite number", value=""),
    _case("stats-compare-duplicate-rows", "input has 2 'psnr' rows for synth/rain image 'img5'", duplicate=True),
    _case("stats-compare-confidence-1.5", "confidence must lie strictly between 0 and 1, got 1.5",
          ["--confidence", "1.5"]),
    _case("stats-compare-confidence-nan", "confidence must lie strictly between 0 and 1", ["--confidence", "nan"]),
    _case("stats-compare-n-boot-0", "n_boot must be an integer >= 100", ["--n-boot", "0"]),
    _case("stats-compare-n-perm-negative", "n_perm must be an integer >= 100", ["--n-perm", "-5"]),
    _case("stats-compare-seed-negative", "seed must be an integer >= 0", ["--seed", "-1"]),
]


def _special_case(id_: str, name: str, kind: str, fragment: str, results: str = "per_image") -> Case:
    """``per_image/<name>`` replaced by a FIFO (nobody writes to it: reading it would block for ever), a
    folder, or bytes that are not UTF-8; ``results`` is what ``--results`` names."""
    def setup(tmp: Path) -> list[str]:
        _results(tmp)
        target = tmp / "per_image" / name
        target.unlink(missing_ok=True)
        if kind == "fifo":
            os.mkfifo(target)
        elif kind == "folder":
            target.mkdir()
        else:
            target.write_bytes(",".join(HEADER).encode() + b"\ninput,synth,haze,img\xff,psnr,20,p\n")
        argv = [*COMPARE]
        argv[argv.index("per_image")] = results
        return argv

    return Case(id_, setup, fragment, timeout_s=30.0)


def _ids_01_and_1(tmp: Path) -> list[str]:
    """The model scored images "01".."03", the input images "1".."3": different images, so nothing pairs."""
    (tmp / "per_image").mkdir()
    for method, ids in (("model", ["01", "02", "03"]), ("input", ["1", "2", "3"])):
        with open(tmp / "per_image" / f"{method}.csv", "w", newline="") as f:
            csv.writer(f).writerows([HEADER, *([method, "synth", "haze", i, "psnr", f"2{k}.5", "p"]
                                               for k, i in enumerate(ids))])
    return [*COMPARE]


CASES += [
    _special_case("stats-compare-fifo-csv", "input.csv", "fifo",
                  "results file per_image/input.csv is not a regular file (a FIFO"),
    _special_case("stats-compare-fifo-parquet", "input.parquet", "fifo",
                  "results file per_image/input.parquet is not a regular file (a FIFO"),
    _special_case("stats-compare-fifo-given-as-results", "input.csv", "fifo",
                  "results file per_image/input.csv is not a regular file (a FIFO", results="per_image/input.csv"),
    _special_case("stats-compare-folder-named-csv", "input.csv", "folder",
                  "results file per_image/input.csv is a folder"),
    _special_case("stats-compare-csv-not-utf8", "input.csv", "bytes",
                  "results file per_image/input.csv is not UTF-8 text (byte"),
    Case("stats-compare-ids-01-and-1-do-not-pair", _ids_01_and_1, "model and input share no images"),
]
