"""`restorevar regress`: metrics against a baseline with per-metric tolerances; non-zero exit on regression."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from restorevar.cli import main
from restorevar.errors import UserError
from restorevar.regress import compare


@pytest.fixture
def files(tmp_path):
    base = {"metrics": {
        "p.model.overall.psnr": {"value": 20.0, "tolerance": 0.5, "better": "higher"},
        "p.model.overall.lpips": {"value": 0.30, "tolerance": 0.02, "better": "lower"},
        "cost.ratio_to_decode.transformer": {"value": 4.0, "tolerance": 0.5, "relative": True, "better": "lower"},
    }}
    (tmp_path / "base.json").write_text(json.dumps(base))

    def current(psnr=20.0, lpips=0.30, ratio=4.0):
        cur = {"p": {"model": {"overall": {"psnr": psnr, "lpips": lpips}}},
               "cost": {"ratio_to_decode": {"transformer": ratio}}}
        (tmp_path / "cur.json").write_text(json.dumps(cur))
        return tmp_path / "cur.json"

    return tmp_path / "base.json", current


def test_within_tolerance_passes_and_prints_a_table(files, capsys):
    base, current = files
    assert main(["regress", "--baseline", str(base), "--current", str(current(19.6, 0.315, 5.9))]) == 0
    out = capsys.readouterr().out
    assert "| `p.model.overall.psnr` | 20 | 19.6 | -0.4 | ±0.5 | higher | ok |" in out


@pytest.mark.parametrize("kw, bad", [({"psnr": 19.4}, "p.model.overall.psnr"),
                                     ({"lpips": 0.33}, "p.model.overall.lpips"),
                                     ({"ratio": 6.1}, "cost.ratio_to_decode.transformer")])
def test_a_regression_beyond_tolerance_fails_and_is_named(files, capsys, kw, bad):
    base, current = files
    assert main(["regress", "--baseline", str(base), "--current", str(current(**kw))]) == 1
    captured = capsys.readouterr()
    assert "**REGRESSED**" in captured.out and bad in captured.err


def test_improvements_never_fail_but_missing_metrics_do(files, tmp_path, capsys):
    base, current = files
    checks = compare(base, current(psnr=25.0, lpips=0.1, ratio=1.0))
    assert [c.status for c in checks] == ["improved", "improved", "improved"]
    (tmp_path / "partial.json").write_text(json.dumps({"p": {"model": {"overall": {"psnr": 20.0}}}}))
    assert main(["regress", "--baseline", str(base), "--current", str(tmp_path / "partial.json")]) == 1
    assert "p.model.overall.lpips (missing)" in capsys.readouterr().err


def test_update_rewrites_values_but_keeps_tolerances(files):
    base, current = files
    assert main(["regress", "--baseline", str(base), "--current", str(current(21.0, 0.2, 3.0)), "--update",
                 "--note", "new tokenizer"]) == 0
    new = json.loads(base.read_text())
    assert new["note"] == "new tokenizer"
    assert new["metrics"]["p.model.overall.psnr"] == {"value": 21.0, "tolerance": 0.5, "better": "higher"}


def test_bad_files_are_one_line_errors(files, tmp_path, capsys):
    base, current = files
    assert main(["regress", "--baseline", str(tmp_path / "nope.json"), "--current", str(current())]) == 2
    assert f"baseline {tmp_path / 'nope.json'} not found" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert main(["regress", "--baseline", str(base), "--current", str(tmp_path / "broken.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


# -- values that would switch the gate off: NaN compares false with everything ---------------------------
BAD_VALUES = [("ten", '"ten"'), (None, "null"), (float("nan"), "NaN"), (float("inf"), "Infinity"),
              (float("-inf"), "-Infinity"), (True, "true"), ([20.0], "[20.0]")]
BAD_IDS = ["text", "null", "nan", "inf", "-inf", "bool", "list"]


def _regress(base, cur, *extra):
    return main(["regress", "--baseline", str(base), "--current", str(cur), *extra])


@pytest.mark.parametrize("bad, shown", BAD_VALUES, ids=BAD_IDS)
def test_a_current_value_that_is_not_a_finite_number_is_an_input_error(files, capsys, bad, shown):
    base, current = files
    cur = current(psnr=bad)
    assert _regress(base, cur) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("restorevar: error: ")
    assert f"current metrics {cur}: metric 'p.model.overall.psnr' is {shown}, not a finite number" in err


@pytest.mark.parametrize("field", ["value", "tolerance"])
@pytest.mark.parametrize("bad, shown", BAD_VALUES, ids=BAD_IDS)
def test_a_baseline_value_or_tolerance_that_is_not_a_finite_number_is_an_input_error(files, capsys, field, bad,
                                                                                    shown):
    base, current = files
    data = json.loads(base.read_text())
    data["metrics"]["p.model.overall.lpips"][field] = bad
    base.write_text(json.dumps(data))
    assert _regress(base, current()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"baseline {base}: metric 'p.model.overall.lpips' has {field} {shown}" in err


def test_a_negative_tolerance_or_a_relative_flag_in_words_is_an_input_error(files, capsys):
    base, current = files
    data = json.loads(base.read_text())
    data["metrics"]["p.model.overall.psnr"]["tolerance"] = -0.5
    base.write_text(json.dumps(data))
    assert _regress(base, current()) == 2
    assert "has tolerance -0.5; a tolerance must be a finite number >= 0" in capsys.readouterr().err
    data["metrics"]["p.model.overall.psnr"]["tolerance"] = 0.5
    data["metrics"]["cost.ratio_to_decode.transformer"]["relative"] = "false"  # bool("false") is True
    base.write_text(json.dumps(data))
    assert _regress(base, current()) == 2
    assert "relative=\"false\"; use true or false" in capsys.readouterr().err


def test_update_refuses_a_nan_run_and_leaves_the_baseline_as_it_was(files, capsys):
    base, current = files
    before = base.read_bytes()
    assert _regress(base, current(lpips=float("nan")), "--update") == 2
    assert "metric 'p.model.overall.lpips' is NaN, not a finite number" in capsys.readouterr().err
    assert base.read_bytes() == before
    # the scenario this closes: a NaN baseline made every later run "within tolerance", even a far worse one
    assert _regress(base, current(psnr=5.0)) == 1


def test_update_rebuilds_a_damaged_baseline_from_a_sound_run(files, capsys):
    base, current = files
    data = json.loads(base.read_text())
    data["metrics"]["p.model.overall.psnr"]["value"] = float("nan")
    base.write_text(json.dumps(data))
    assert _regress(base, current()) == 2  # checking against it is refused...
    capsys.readouterr()
    assert _regress(base, current(psnr=20.5), "--update") == 0  # ...but --update replaces every value
    text = base.read_text()
    assert "NaN" not in text and json.loads(text)["metrics"]["p.model.overall.psnr"]["value"] == 20.5
    assert _regress(base, current(psnr=20.5)) == 0


def test_unrelated_non_numbers_in_the_run_are_ignored(files, tmp_path, capsys):
    base, current = files
    cur = json.loads(current().read_text())
    cur["device"], cur["p"]["model"]["overall"]["musiq"] = "cpu", None  # not baseline metrics
    (tmp_path / "cur2.json").write_text(json.dumps(cur))
    assert _regress(base, tmp_path / "cur2.json") == 0


def _seeded(tmp_path, current_mean, sd=0.2, seeds=2, run_sd=0.3, run_seeds=2):
    base = {"metrics": {"ablations.refiner.p.lrt.psnr.mean": {
        "value": 10.0, "seed_sd": sd, "seeds": seeds, "tolerance": 0.01, "better": "higher"}}}
    (tmp_path / "base.json").write_text(json.dumps(base))
    cur = {"ablations": {"refiner": {"p": {"lrt": {"psnr": {"mean": current_mean, "seed_sd": run_sd,
                                                            "seeds": run_seeds}}}}}}
    (tmp_path / "cur.json").write_text(json.dumps(cur))
    return tmp_path / "base.json", tmp_path / "cur.json"


def test_a_metric_over_seeds_may_fall_by_a_t_quantile_of_the_seed_spread(tmp_path, capsys):
    # SD 0.2 over 3 seeds: a difference of two 3-seed means has SD 0.2 * sqrt(2/3) = 0.1633; the one-sided 1 %
    # t quantile on 2 df is 6.965, so 1.137 may be lost
    base, cur = _seeded(tmp_path, 8.9, seeds=3)
    [c] = compare(base, cur)
    assert c.seed_quantile == pytest.approx(6.9646, abs=1e-4)
    assert c.allowed == pytest.approx(6.9646 * 0.2 * (2 / 3) ** 0.5, abs=1e-4) and c.status == "ok"
    assert main(["regress", "--baseline", str(base), "--current", str(cur)]) == 0
    assert "6.96 × seed SD 0.2 × √(2/3); floor ±0.01" in capsys.readouterr().out
    base, cur = _seeded(tmp_path, 8.8, seeds=3)
    assert main(["regress", "--baseline", str(base), "--current", str(cur)]) == 1
    base, cur = _seeded(tmp_path, 9.95, sd=0.0, seeds=3)  # seeds that agree exactly: only the floor is allowed
    assert compare(base, cur)[0].allowed == pytest.approx(0.01) and compare(base, cur)[0].status == "regressed"
    base, cur = _seeded(tmp_path, 9.0, seeds=8)  # more seeds: a tighter band, 2.998 * 0.2 * 0.5 = 0.30
    assert compare(base, cur)[0].allowed == pytest.approx(0.2998, abs=1e-3) and compare(base, cur)[0].status == "regressed"


def test_update_takes_the_seed_spread_from_the_run_and_bad_spreads_are_input_errors(tmp_path, capsys):
    base, cur = _seeded(tmp_path, 10.5, run_sd=0.35, run_seeds=3)
    assert main(["regress", "--baseline", str(base), "--current", str(cur), "--update"]) == 0
    spec = json.loads(base.read_text())["metrics"]["ablations.refiner.p.lrt.psnr.mean"]
    assert spec == {"value": 10.5, "seed_sd": 0.35, "seeds": 3, "tolerance": 0.01, "better": "higher"}
    base, cur = _seeded(tmp_path, 10.5, run_seeds=1)
    before = base.read_text()
    assert main(["regress", "--baseline", str(base), "--current", str(cur), "--update"]) == 2
    assert "measured over 1 seed(s)" in capsys.readouterr().err and base.read_text() == before
    base, cur = _seeded(tmp_path, 10.5, seeds=1)
    assert main(["regress", "--baseline", str(base), "--current", str(cur)]) == 2
    assert "seeds >= 2" in capsys.readouterr().err


def test_the_report_file_starts_with_a_verdict_and_holds_the_table(files, tmp_path):
    base, current = files
    out = tmp_path / "reports" / "regression.md"
    assert main(["regress", "--baseline", str(base), "--current", str(current()), "--report", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "# Regression report" and lines[2] == "**PASS**: all 3 metrics within tolerance"
    assert "| `p.model.overall.psnr` | 20 | 20 | +0 | ±0.5 | higher | ok |" in lines
    assert main(["regress", "--baseline", str(base), "--current", str(current(psnr=19.0)), "--report", str(out)]) == 1
    assert out.read_text().splitlines()[2] == ("**FAIL**: 1 of 3 metrics regressed or missing: "
                                              "`p.model.overall.psnr` (regressed)")


# -- the tolerance boundary: worse by exactly the tolerance passes, however the float subtraction rounds -------
def _one(tmp_path, baseline, current, tolerance, better="higher", relative=False):
    spec = {"value": baseline, "tolerance": tolerance, "better": better, "relative": relative}
    (tmp_path / "b.json").write_text(json.dumps({"metrics": {"m.x": spec}}))
    (tmp_path / "c.json").write_text(json.dumps({"m": {"x": current}}))
    [check] = compare(tmp_path / "b.json", tmp_path / "c.json")
    return check.status


# (baseline, current, tolerance): each exactly at the tolerance in decimal, while the float difference lands
# above it (0.4 - 0.3 = 0.10000000000000003, 1.1 - 1.0 = 0.10000000000000009), below it (0.7 - 0.6) or on it
AT_TOLERANCE = [(0.4, 0.3, 0.1), (1.1, 1.0, 0.1), (0.7, 0.6, 0.1), (20.0, 19.5, 0.5), (0.33, 0.31, 0.02),
                (9.81, 9.31, 0.5), (0.3, 0.2, 0.1)]


@pytest.mark.parametrize("baseline, current, tolerance", AT_TOLERANCE)
def test_a_value_worse_by_exactly_the_tolerance_passes_in_either_direction(tmp_path, baseline, current, tolerance):
    assert _one(tmp_path, baseline, current, tolerance, "higher") == "ok"
    assert _one(tmp_path, current, baseline, tolerance, "lower") == "ok"
    # one step of the stored precision (metrics.json keeps 5 decimals) beyond the tolerance still fails
    assert _one(tmp_path, baseline, round(current - 1e-5, 5), tolerance, "higher") == "regressed"
    assert _one(tmp_path, current, round(baseline + 1e-5, 5), tolerance, "lower") == "regressed"
    # and better by exactly the tolerance is "ok", not "improved", by the same rule
    assert _one(tmp_path, current, baseline, tolerance, "higher") == "ok"


def test_every_decimal_pair_at_the_tolerance_is_treated_alike(tmp_path):
    statuses = {_one(tmp_path, b / 100, round(b / 100 - t, 2), t) for b in range(50, 100, 7) for t in (0.01, 0.1, 0.3)}
    assert statuses == {"ok"}


def test_a_relative_tolerance_is_rounded_the_same_way(tmp_path):
    # 0.1 * 3.0 = 0.30000000000000004 allowed and 3.0 - 2.7 = 0.2999999999999998 lost: exactly 10 %, passes
    assert _one(tmp_path, 3.0, 2.7, 0.1, "higher", relative=True) == "ok"
    assert _one(tmp_path, 3.0, 3.3, 0.1, "lower", relative=True) == "ok"
    assert _one(tmp_path, 3.0, 3.30001, 0.1, "lower", relative=True) == "regressed"


# -- a value said twice: a dotted key beside the nested path it spells would hide one of them -------------------
def test_a_dotted_key_that_repeats_a_nested_path_is_an_input_error_in_either_order(files, tmp_path):
    base, _ = files
    nested = {"p": {"model": {"overall": {"psnr": 10.0, "lpips": 0.3}}}, "cost": {"ratio_to_decode": {"transformer": 4}}}
    for cur in ({**nested, "p.model.overall.psnr": 99}, {"p.model.overall.psnr": 99, **nested},
                {**nested, "p": {**nested["p"], "model.overall": {"psnr": 99}}}):
        (tmp_path / "cur.json").write_text(json.dumps(cur))
        with pytest.raises(UserError, match=r"is given twice, as the keys \["):
            compare(base, tmp_path / "cur.json")


def test_dotted_keys_that_repeat_nothing_are_read_as_before(files, tmp_path):
    base, _ = files
    flat = {"p.model.overall.psnr": 19.0, "p.model.overall.lpips": 0.3, "cost.ratio_to_decode.transformer": 4.0}
    (tmp_path / "flat.json").write_text(json.dumps(flat))
    assert [c.status for c in compare(base, tmp_path / "flat.json")] == ["regressed", "ok", "ok"]


def test_the_tolerances_the_benchmarks_readme_states_are_the_baselines():
    """The README's examples name real baseline metrics with their real tolerances (they drifted once)."""
    import re

    root = Path(__file__).resolve().parents[1]
    text = (root / "benchmarks" / "README.md").read_text()
    base = json.loads((root / "benchmarks" / "baseline.json").read_text())["metrics"]
    stated = re.findall(r"`([\w.]+)` \((?:value [\d.]+, )?(relative )?tolerance ([\d.]+)\)", text)
    assert stated, "the README states no tolerance"
    for key, relative, tol in stated:
        assert key in base, key
        assert base[key]["tolerance"] == float(tol) and bool(base[key].get("relative")) == bool(relative), key
