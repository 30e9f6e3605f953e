"""The CI workflow a user's repository runs: it parses, calls the README's commands, and keeps the
regression report; `.ci/run` calls the same make targets; a scheduled job runs the slow tests."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _workflow() -> dict:
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    wf["on"] = wf.get("on", wf.pop(True, None))  # YAML 1.1 reads the key `on` as True
    return wf


def _steps() -> list[dict]:
    wf = _workflow()
    assert {"push", "pull_request"} <= set(wf["on"])
    job = wf["jobs"]["test"]
    assert "if" not in job  # every push and pull request
    return job["steps"]


def _targets(text: str) -> list[str]:
    return re.findall(r"\bmake (lint|test-slow|test|regress|repro)\b", text)


def test_the_workflow_runs_the_readme_commands_and_keeps_the_report():
    steps = _steps()
    runs = "\n".join(s.get("run", "") for s in steps)
    assert _targets(runs) == ["lint", "test", "regress"]
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make regress" in readme
    summary = next(s for s in steps if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "reports/regression.md" in summary["run"] and upload["with"]["path"] == "reports/regression.md"
    assert summary["if"].startswith("always()") and upload["if"].startswith("always()")  # also on a failure


def test_ci_run_and_make_regress_call_the_same_targets_and_write_the_report():
    assert _targets((ROOT / ".ci" / "run").read_text()) == ["lint", "test", "regress"]
    makefile = (ROOT / "Makefile").read_text()
    block = makefile[makefile.index("\nregress:"):]
    assert "--report reports/regression.md" in block[:block.index("\n\n")]


def test_ci_runs_the_tiny_study_once_and_regress_compares_what_the_tests_wrote():
    steps = {s["name"]: s for s in _steps() if "name" in s}
    written = steps["test"]["env"]["RESTOREVAR_TINY_METRICS"]
    assert written.endswith("/.regress/metrics.json")
    assert "TINY_METRICS=.regress/metrics.json" in steps["regress"]["run"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'export RESTOREVAR_TINY_METRICS="$PWD/.regress/metrics.json"' in ci
    assert 'make regress TINY_METRICS="$RESTOREVAR_TINY_METRICS"' in ci
    assert ci.index('rm -f "$RESTOREVAR_TINY_METRICS"') < ci.index("make test")  # never an old file
    makefile = (ROOT / "Makefile").read_text()
    block = makefile[makefile.index("\nregress:"):]
    assert "$(if $(TINY_METRICS),," in block[:block.index("\n\n")]  # the study only without a file


def test_a_scheduled_job_runs_the_slow_tests_that_make_test_leaves_out():
    wf = _workflow()
    assert wf["on"]["schedule"][0]["cron"] and "workflow_dispatch" in wf["on"]
    slow = wf["jobs"]["slow"]
    assert "schedule" in slow["if"] and "workflow_dispatch" in slow["if"] and "push" not in slow["if"]
    assert _targets("\n".join(s.get("run", "") for s in slow["steps"])) == ["test-slow"]
    assert wf["env"] == {"HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "DVC_NO_ANALYTICS": "1",
                         "RAY_USAGE_STATS_ENABLED": "0", "PYTHONHASHSEED": "0"}
    assert not any("env" in job for job in wf["jobs"].values())  # both jobs offline, through the workflow's env
    makefile = (ROOT / "Makefile").read_text()
    assert '-m "not slow"' in makefile[makefile.index("\ntest:"):] and "-m slow" in makefile[makefile.index("\ntest-slow:"):]
