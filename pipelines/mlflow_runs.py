"""The one module that talks to MLflow (its API moves; keep it behind this small surface).

The store is sqlite (``mlflow.db`` in the project; MLflow's file store is refused). Experiments are
created on the driver before any trial starts; trials open runs by experiment id, never with
``set_experiment``. A run ends FINISHED or FAILED: the driver marks runs a killed process left RUNNING
as FAILED, and a resumed trial reopens its own run.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def is_server(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in ("http", "https")


def ensure_experiment(uri: str, name: str, artifact_root: Path) -> str:
    """Create (or find) the experiment on the driver; mark runs left RUNNING by a killed process as FAILED."""
    c = _client(uri)
    exp = c.get_experiment_by_name(name)
    # a tracking server keeps artifacts where it is told to (--artifacts-destination) and serves them to every
    # node; a file:// location would make each node write to its own disk, around the server
    location = None if is_server(uri) else (artifact_root / name).as_uri()
    # the tag makes MLflow 3's UI open these in its model-training view rather than the GenAI one
    exp_id = exp.experiment_id if exp else c.create_experiment(
        name, artifact_location=location, tags={"mlflow.experimentKind": "custom_model_development"})
    for run in c.search_runs([exp_id], filter_string="attributes.status = 'RUNNING'"):
        c.set_terminated(run.info.run_id, "FAILED")
    return exp_id


class TrialRun:
    """An MLflow run for one trial; reopened by id when the trial resumes."""

    def __init__(self, uri: str, experiment_id: str, run_name: str, id_file: Path, tags: dict[str, str]):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        run_id = id_file.read_text().strip() if id_file.exists() else None
        self.run = mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                                    run_name=run_name, tags=tags)
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(self.run.info.run_id)

    def log_params(self, params: dict[str, Any]) -> None:
        flat = {k: str(v)[:500] for k, v in _flatten(params).items()}
        existing = self.mlflow.get_run(self.run.info.run_id).data.params
        self.mlflow.log_params({k: v for k, v in flat.items() if k not in existing})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_image(self, image_HW3, name: str) -> None:
        self.mlflow.log_image(image_HW3, name)

    def log_artifact(self, path: Path, subdir: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=subdir)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.mlflow.set_tags(tags)

    def end(self, ok: bool) -> None:
        self.mlflow.end_run("FINISHED" if ok else "FAILED")


def log_run(uri: str, experiment: str, artifact_root: Path, run_name: str, params: dict[str, Any],
            metrics: dict[str, Any], artifacts: list[Path], tags: dict[str, str]) -> str:
    """One finished run outside Ray Tune (the benchmark): nested params/metrics flattened to dotted names."""
    import time

    from mlflow.entities import Metric, Param

    exp_id = ensure_experiment(uri, experiment, artifact_root)
    c = _client(uri)
    run_id = c.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
    try:
        now = int(time.time() * 1000)
        ps = [Param(k, str(v)[:500]) for k, v in _flatten(params).items()]
        ms = [Metric(k, float(v), now, 0) for k, v in _flatten(metrics).items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for i in range(0, len(ps), 100):  # MLflow's limits per batch: 100 params, 1000 metrics
            c.log_batch(run_id, params=ps[i:i + 100])
        for i in range(0, len(ms), 1000):
            c.log_batch(run_id, metrics=ms[i:i + 1000])
        for a in artifacts:
            c.log_artifact(run_id, str(a))
    except BaseException:
        c.set_terminated(run_id, "FAILED")
        raise
    c.set_terminated(run_id, "FINISHED")
    return run_id


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# tracked files the study itself rewrites (the committed report and metrics): a change there is a result, not an
# input. Without metrics.json here, every trial after the evaluate stage of a fresh clone's first study (the
# ablation families) was tagged "-dirty": evaluate rewrites its cost timings.
GENERATED = ("reports", "metrics.json")


def git_state(root: Path) -> tuple[str, str]:
    """The commit the project's files come from, with "-dirty" when tracked inputs differ from it, and the
    hash of that difference (empty when clean); ("none", "") outside a git checkout (e.g. a copied project)."""
    import hashlib
    import subprocess

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], check=False, cwd=root, capture_output=True, text=True, timeout=60)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "none", ""
        diff = git("diff", "HEAD", "--", ".", *(f":(exclude){g}" for g in GENERATED)).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "none", ""
    commit = head.stdout.strip()
    return (commit + "-dirty", hashlib.sha256(diff.encode()).hexdigest()[:12]) if diff else (commit, "")


def sha256_short(path: Path) -> str:
    from restorevar.data.fetch import sha256_of

    return sha256_of(path)[:16] if path.is_file() else "missing"


def provenance(root: Path, params_file: Path, **files: Path) -> dict[str, str]:
    """Tags that tie a run to its inputs: the git commit (and the hash of uncommitted changes to tracked
    inputs), params.yaml's hash, the study (all of these together: every run of one `dvc repro` shares it)
    and ``<name>_sha256`` of each file given."""
    import hashlib

    (commit, diff), params = git_state(root), sha256_short(params_file)
    study = hashlib.sha256(f"{commit}:{diff}:{params}".encode()).hexdigest()[:12]
    return {"git_commit": commit, **({"git_diff_sha256": diff} if diff else {}), "params_sha256": params,
            "study": study, **{f"{name}_sha256": sha256_short(path) for name, path in files.items()}}


def stratum_names(strata: list[str]) -> dict[str, str]:
    """Metric-name parts for strata: 'dataset/degradation' -> the dataset's name, or 'dataset-degradation'
    where a dataset holds several."""
    datasets = [s.split("/", 1)[0] for s in strata]
    return {s: (d if datasets.count(d) == 1 else s.replace("/", "-")) for s, d in zip(strata, datasets)}


def log_metrics_to(uri: str, run_id: str, metrics: dict[str, float]) -> None:
    """Add metrics to a finished run (an ablation trial's test scores, known only after its evaluation)."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    ms = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for i in range(0, len(ms), 1000):
        _client(uri).log_batch(run_id, metrics=ms[i:i + 1000])


def runs_of(uri: str, experiment_name: str) -> list[Any]:
    c = _client(uri)
    exp = c.get_experiment_by_name(experiment_name)
    return c.search_runs([exp.experiment_id]) if exp else []


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="restorevar-mlflow-"))
