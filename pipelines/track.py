"""DVC stage `track`: the study's test results as one MLflow run, so the UI compares studies as it compares
training runs.

The run (experiment ``evaluation``) carries:
- params: profile, protocol id, the checkpoint's and the test manifest's hashes, the git commit and
  params.yaml's hash;
- metrics, flat: ``<metric>/<method>/<dataset>`` from metrics.json (``overall`` for the dataset-weighted
  mean) and, from stats.json, ``<metric>_diff_vs_<baseline>/<dataset>`` with ``..._ci_low``,
  ``..._ci_high`` and ``..._p`` beside it, and ``<metric>_diff_vs_<baseline>_across_seeds/<dataset>`` with its
  interval for a baseline trained once per seed (PromptIR);
- artifacts: reports/report.html, metrics.json and results/stats.json.
Its ``study`` tag is the one every training run of the same commit and params carries. Writes
results/tracking.json (the run id and what was logged).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from pipelines import mlflow_runs
from pipelines.params import ROOT, Params, checkpoint_path
from pipelines.stage_main import stage_main
from restorevar.errors import UserError
from restorevar.fileio import atomic_write

EXPERIMENT = "evaluation"
ARTIFACTS = ("reports/report.html", "metrics.json", "results/stats.json")


def quality_metrics(metrics: dict[str, Any], protocol: str) -> dict[str, float]:
    """``<metric>/<method>/<dataset>`` for every mean in metrics.json under ``protocol``."""
    if protocol not in metrics:
        raise UserError(f"metrics.json has no results under protocol {protocol}; run the evaluate stage")
    out = {}
    for method, entry in metrics[protocol].items():
        names = mlflow_runs.stratum_names([k for k in entry if k != "overall"])
        for key, values in entry.items():
            for metric, v in values.items():
                out[f"{metric}/{method}/{names.get(key, key)}"] = float(v)
    return out


def comparison_metrics(stats: dict[str, Any]) -> dict[str, float]:
    """``<metric>_diff_vs_<b>/<dataset>`` and its interval and p-value, per stratum and ``overall``
    (the dataset-weighted test)."""
    out = {}
    for c in stats["comparisons"]:
        head = f"{c['metric']}_diff_vs_{c['b']}"
        names = mlflow_runs.stratum_names([f"{s['dataset']}/{s['degradation']}" for s in c["strata"]])
        rows = [(names[f"{s['dataset']}/{s['degradation']}"], s["mean_diff"], s["ci_bca"], s["p_t"]) for s in c["strata"]]
        w = c["weighted"]
        rows.append(("overall", w["mean_diff"], w["ci"], w["p_perm"]))
        for name, diff, (lo, hi), p in rows:
            out.update({f"{head}/{name}": diff, f"{head}/{name}_ci_low": lo, f"{head}/{name}_ci_high": hi,
                        f"{head}/{name}_p": p})
    across = stats.get("across_seeds", [])  # a baseline trained per seed: the difference across its seeds
    names = {**mlflow_runs.stratum_names(sorted({c["group"] for c in across} - {"overall"})), "overall": "overall"}
    for c in across:
        head = f"{c['metric']}_diff_vs_{c['b']}_across_seeds/{names[c['group']]}"
        out.update({head: c["mean_diff"], f"{head}_ci_low": c["ci"][0], f"{head}_ci_high": c["ci"][1]})
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}  # MLflow takes no NaN


def run() -> dict[str, Any]:
    started = time.perf_counter()
    p = Params()
    metrics = json.loads((ROOT / "metrics.json").read_text())
    stats = json.loads((ROOT / "results" / "stats.json").read_text())
    info = json.loads((ROOT / "results" / "evaluation.json").read_text())
    protocol = info["protocol"]["id"]
    prov = mlflow_runs.provenance(ROOT, p.path, checkpoint=checkpoint_path("train_refiner"),
                               test_manifest=Path(p.test_manifest))
    params = {"profile": p.profile, "protocol": protocol, "preset": info["preset"], **prov}
    logged = {**quality_metrics(metrics, protocol), **comparison_metrics(stats)}
    artifacts = [ROOT / a for a in ARTIFACTS if (ROOT / a).is_file()]
    run_id = mlflow_runs.log_run(p.mlflow_uri, EXPERIMENT, ROOT / "mlartifacts", f"evaluation/{p.profile}", params,
                              logged, artifacts, tags={"profile": p.profile, "protocol": protocol,
                                                       "study": prov["study"], "git_commit": prov["git_commit"]})
    out = {"experiment": EXPERIMENT, "run_id": run_id, "study": prov["study"], "params": params,
           "metrics": len(logged), "artifacts": [str(a.relative_to(ROOT)) for a in artifacts],
           "seconds": round(time.perf_counter() - started, 1)}
    text = json.dumps(out, indent=1) + "\n"
    atomic_write(ROOT / "results" / "tracking.json", lambda tmp: Path(tmp).write_text(text))
    return out


def main() -> int:
    return stage_main("track", run, lambda out: [
        f"track: MLflow run {out['run_id']} in experiment '{out['experiment']}' (study {out['study']}): "
        + f"{out['metrics']} metrics, {len(out['artifacts'])} artifacts, {out['seconds']} s"])


if __name__ == "__main__":
    sys.exit(main())
