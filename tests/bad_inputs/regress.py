"""``restorevar regress``: values that would switch the CI gate off. NaN compares false with everything, so a
NaN (or a text, null or boolean value) in the baseline, the run or a tolerance must stop the check with exit 2,
naming the metric and the file; ``--update`` must not write such a value, and leaves the baseline as it was.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bad_inputs import Case

METRIC = "p.model.overall.psnr"


def _files(tmp: Path, value: Any = 20.0, tolerance: Any = 0.5, current: Any = 20.1) -> None:
    # json.dumps writes float("nan") as NaN and float("inf") as Infinity, as a hand edit or a NaN run would
    base = {"metrics": {METRIC: {"value": value, "tolerance": tolerance, "better": "higher"},
                        "p.model.overall.ssim": {"value": 0.5, "tolerance": 0.01, "better": "higher"}}}
    (tmp / "baseline.json").write_text(json.dumps(base, indent=1) + "\n")
    (tmp / "metrics.json").write_text(json.dumps({"p": {"model": {"overall": {"psnr": current, "ssim": 0.5}}}}))


def _case(where: str, bad: Any, name: str, shown: str, update: bool = False) -> Case:
    def setup(tmp: Path) -> list[str]:
        _files(tmp, **{where: bad})
        return ["regress", "--baseline", "baseline.json", "--current", "metrics.json"] + (["--update"] if update else [])

    if where == "current":
        fragment = f"current metrics metrics.json: metric '{METRIC}' is {shown}, not a finite number"
    else:
        fragment = f"baseline baseline.json: metric '{METRIC}' has {where} {shown}"
    return Case(f"regress-{where}-{name}" + ("-update" if update else ""), setup, fragment)


BAD = [("text", "ten", '"ten"'), ("null", None, "null"), ("nan", float("nan"), "NaN"),
       ("inf", float("inf"), "Infinity"), ("bool", True, "true")]

CASES = [_case(where, bad, name, shown) for where in ("current", "value", "tolerance") for name, bad, shown in BAD]
# --update: a NaN (or text) run is not written into the baseline; the runner checks baseline.json is unchanged
CASES += [_case("current", bad, name, shown, update=True) for name, bad, shown in BAD]
# --update rewrites values only: a bad tolerance is refused there too
CASES += [_case("tolerance", float("nan"), "nan", "NaN", update=True)]
CASES += [_case("tolerance", -1, "negative", "-1")]
