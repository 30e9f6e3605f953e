"""The one module that talks to Ray Tune (its API moves; keep it behind this small surface).

Each training stage is one Tune experiment; every variant is a trial with the stage's resources. The
experiment name carries a hash of the stage config, so a killed stage is restored (``Tuner.restore``)
while changed params start a fresh experiment. ``RAY_ADDRESS`` (or params ``tracking.ray_address``) joins
an existing cluster; otherwise a local Ray starts with this machine's CPUs/GPUs.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # trials keep the project as their working directory


def init(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or address
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(include_dashboard=False, log_to_driver=True, configure_logging=False)


def report(metrics: dict[str, float], checkpoint_file: Path | None) -> None:
    """From inside a trial: report metrics, and the checkpoint file through Tune's storage."""
    from ray import tune

    if checkpoint_file is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        shutil.copy2(checkpoint_file, Path(d) / checkpoint_file.name)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def restore_checkpoint_into(run_dir: Path, name: str) -> bool:
    """If Tune restored this trial with a checkpoint and ``run_dir`` lacks one, put Tune's copy there."""
    from ray import tune

    ckpt = tune.get_checkpoint()
    if ckpt is None or (run_dir / name).exists():
        return False
    with ckpt.as_directory() as d:
        src = Path(d) / name
        if src.exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, run_dir / name)
            return True
    return False


# Ray's message when a restored trial's snapshot names a checkpoint that is no longer on storage
LOST_CHECKPOINT = "Could not recover from checkpoint as it does not exist on storage anymore"


def run(
    *,
    name: str,
    trainable: Callable[[dict[str, Any]], None],
    trials: list[dict[str, Any]],
    resources: dict[str, float],
    storage: str,
    max_failures: int,
) -> list[dict[str, Any]]:
    """Run (or restore) the experiment; returns each trial's config, last metrics and error, if any."""
    from ray import tune

    fn = tune.with_resources(trainable, {k: v for k, v in resources.items() if v})
    path = Path(storage) / name

    def fresh() -> tune.Tuner:
        return tune.Tuner(
            fn,
            param_space={"trial": tune.grid_search(trials)},
            run_config=tune.RunConfig(
                name=name, storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                verbose=1,
            ),
        )

    restored = tune.Tuner.can_restore(str(path))
    if restored:
        tuner = tune.Tuner.restore(str(path), trainable=fn, resume_errored=True, restart_errored=False,
                                   resume_unfinished=True)
    else:
        tuner = fresh()
    results = tuner.fit()
    if restored and any(r.error is not None and LOST_CHECKPOINT in str(r.error) for r in results):
        # Tune writes its experiment snapshot on a timer but deletes old checkpoints (num_to_keep) at each
        # report, so a kill in between leaves a snapshot naming a deleted checkpoint. Each trainer's own
        # last.pt and MLflow run id in its run folder are the state that counts: set the stale snapshot aside
        # and run the experiment afresh, which resumes every trial from there.
        stale = path.with_name(f"{name}.stale-{int(time.time())}")
        path.rename(stale)
        print(f"tune: {name}: the experiment snapshot names a deleted checkpoint; moved it to {stale.name}, "
              "resuming each trial from its own last checkpoint", flush=True)
        results = fresh().fit()
    out = []
    for r in results:
        out.append({"trial": r.config["trial"], "metrics": dict(r.metrics or {}),
                    "error": None if r.error is None else str(r.error).splitlines()[0][:300]})
    return out
