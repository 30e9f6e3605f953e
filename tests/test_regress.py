"""`restorevar regress`: metrics against a baseline with per-metric tolerances; non-zero exit on regression."""
from __future__ import annotations

import json

import pytest

from restorevar.cli import main
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
    assert "baseline not found" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert main(["regress", "--baseline", str(base), "--current", str(tmp_path / "broken.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
