"""``restorevar regress``: values that would switch the CI gate off. NaN compares false with everything, so a
NaN (or a text, null or boolean value) in the baseline, the run or a tolerance must stop the check with exit 2,
naming the metric and the file; ``--update`` must not write such a value, and leaves the baseline as it was.
So must a file it cannot read (a FIFO, a folder, non-UTF-8, nesting or an integer past what json.loads takes)
and a run that gives a metric twice (a dotted key beside the nested path, or a key repeated in one object).
"""
from __future__ import annotations

import json
import os
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


# -- files the gate cannot read, or that say a value twice ---------------------------------------------------
ARGV = ["regress", "--baseline", "baseline.json", "--current", "metrics.json"]
NESTED_REGRESSED = {"p": {"model": {"overall": {"psnr": 10.0, "ssim": 0.5}}}}  # psnr 10 is far below 20


def _text_case(id_: str, which: str, text: str | bytes, fragment: str, update: bool = False) -> Case:
    """``which`` ("baseline" or "current") replaced by ``text`` as written (bytes for non-UTF-8)."""
    def setup(tmp: Path) -> list[str]:
        _files(tmp)
        target = tmp / ("baseline.json" if which == "baseline" else "metrics.json")
        target.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ARGV + (["--update"] if update else [])

    return Case(id_, setup, fragment)


def _special_case(id_: str, which: str, kind: str, fragment: str) -> Case:
    """``which`` replaced by a FIFO (nobody writes to it: reading it would block for ever) or a folder."""
    def setup(tmp: Path) -> list[str]:
        _files(tmp)
        target = tmp / ("baseline.json" if which == "baseline" else "metrics.json")
        target.unlink()
        if kind == "fifo":
            os.mkfifo(target)
        else:
            target.mkdir()
        return ARGV

    return Case(id_, setup, fragment, timeout_s=30.0)


def _metrics(**extra: Any) -> str:
    """The current run: psnr regressed in the nested form, plus ``extra`` keys at the top (after it)."""
    return json.dumps({**NESTED_REGRESSED, **extra})


WHAT = {"baseline": "baseline baseline.json", "current": "current metrics metrics.json"}
CASES += [_special_case(f"regress-{w}-fifo", w, "fifo", f"{WHAT[w]} is not a regular file (a FIFO")
          for w in ("baseline", "current")]
CASES += [_special_case(f"regress-{w}-folder", w, "folder", f"{WHAT[w]} is a folder; give the file inside it")
          for w in ("baseline", "current")]
CASES += [_text_case(f"regress-{w}-not-utf8", w, b'{"p": "\xff\xfe"}', f"{WHAT[w]} is not UTF-8 text (byte")
          for w in ("baseline", "current")]
# json.loads refuses int literals over 4300 digits with a ValueError, and deep nesting with a RecursionError
CASES += [_text_case(f"regress-{w}-5000-digit-int", w, '{"metrics": ' + "9" * 5000 + "}",
                     f"{WHAT[w]} holds an integer literal of over 4300 digits") for w in ("baseline", "current")]
CASES += [_text_case(f"regress-{w}-deep-nesting", w, "[" * 100_000, f"{WHAT[w]} is nested too deeply")
          for w in ("baseline", "current")]
# an integer beyond float range is not a finite number; the message shows it cut short, on one line
CASES += [_text_case("regress-current-400-digit-int-cut-short", "current",
                     json.dumps({"p": {"model": {"overall": {"psnr": int("9" * 400), "ssim": 0.5}}}}),
                     "... (400 characters), not a finite number")]
# a seed count scipy cannot take (a TypeError deep in the t quantile)
CASES += [_text_case("regress-baseline-seeds-1e30", "baseline",
                     json.dumps({"metrics": {METRIC: {"value": 20.0, "tolerance": 0.5, "seed_sd": 0.1,
                                                      "seeds": 10 ** 30}}}),
                     "seeds=1000000000000000000000000000000; a seed spread needs")]
# a value said twice: the one read last hid the other (a regressed psnr shown as improved, exit 0)
COLLIDE = f"current metrics metrics.json: \"{METRIC}\" is given twice"
CASES += [
    _text_case("regress-current-flat-key-after-nested", "current", _metrics(**{METRIC: 99}), COLLIDE),
    _text_case("regress-current-flat-key-before-nested", "current",
               json.dumps({METRIC: 99, **NESTED_REGRESSED}), COLLIDE),
    _text_case("regress-current-dotted-key-inside-nesting", "current",
               json.dumps({"p": {**NESTED_REGRESSED["p"], "model.overall": {"psnr": 99}}}),
               "current metrics metrics.json: \"p.model.overall\" is given twice"),
    _text_case("regress-current-flat-key-update", "current", _metrics(**{METRIC: 99}), COLLIDE, update=True),
    _text_case("regress-current-duplicate-key", "current",
               '{"p": {"model": {"overall": {"psnr": 10.0, "ssim": 0.5, "psnr": 99}}}}',
               "current metrics metrics.json gives the key \"psnr\" twice in one object"),
    _text_case("regress-baseline-duplicate-metric", "baseline",
               f'{{"metrics": {{"{METRIC}": {{"value": 20.0, "tolerance": 0.5}}, '
               f'"{METRIC}": {{"value": 20.0, "tolerance": 100}}}}}}',
               f"baseline baseline.json gives the key \"{METRIC}\" twice in one object"),
]
