"""The one module that talks to Ray Tune (its API moves; keep it behind this small surface).

Each training stage is one Tune experiment; every variant is a trial with the stage's resources. The
experiment name carries a hash of the stage config, so a killed stage is restored (``Tuner.restore``)
while changed params start a fresh experiment. ``RAY_ADDRESS`` (or params ``tracking.ray_address``) joins
an existing cluster; otherwise a local Ray starts with this machine's CPUs/GPUs.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from restorevar.errors import UserError

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # trials keep the project as their working directory


# Ray's loopback-only mode, the one it uses on macOS and Windows: the node's address is 127.0.0.1, so the GCS,
# the raylet, the workers and the agents all listen there and nothing of a one-machine study is reachable
# from the network. Joining a cluster (an address) leaves it off.
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init(address: str | None) -> None:
    address = os.environ.get("RAY_ADDRESS") or address
    if not address:
        os.environ.setdefault(LOOPBACK_ONLY, "0")  # before Ray reads it; the processes it starts inherit it
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        return
    if not address and os.environ[LOOPBACK_ONLY] == "0":
        ray_constants.ENABLE_RAY_CLUSTER = False  # read at import: in case Ray was imported before this
    env = {"env_vars": worker_env()}
    if address:
        try:
            ray.init(address=address, log_to_driver=True, runtime_env=env)
        except ray.exceptions.AuthenticationError:
            raise UserError(f"the Ray cluster at {address} refused this driver's token; export RAY_AUTH_MODE=token and "
                            "give it the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN_PATH)") from None
    else:
        ray.init(include_dashboard=False, log_to_driver=True, configure_logging=False, runtime_env=env)


# what a trial reads from its environment: the weight caches (the perceptual loss and metrics find their
# files there), the offline switches and the hash seed. A worker on another node starts from the environment
# of its own `ray start`, so these travel with every task of the study.
WORKER_ENV = ("RESTOREVAR_WEIGHTS", "TORCH_HOME", "HF_HOME", "HF_HUB_OFFLINE", "NO_ALBUMENTATIONS_UPDATE",
              "PYTHONHASHSEED", "RAY_CHDIR_TO_TRIAL_DIR", "RAY_USAGE_STATS_ENABLED")


def worker_env() -> dict[str, str]:
    return {k: os.environ[k] for k in WORKER_ENV if k in os.environ}


def node() -> str:
    """From inside a trial: the Ray node it runs on (its IP and the node id's first 12 characters), for the
    run's tags: on a cluster, what ran where."""
    import ray

    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:12]}"


def report(metrics: dict[str, float]) -> None:
    """From inside a trial: report metrics to Tune. Checkpoints do not go through Tune's storage: each
    trainer's own last.pt in its run folder is the one copy, what a restarted or restored trial resumes from
    (Tune would keep two more copies of every checkpoint, gigabytes each at the paper's size)."""
    from ray import tune

    tune.report(metrics)


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

    if tune.Tuner.can_restore(str(path)):  # a killed stage: its unfinished trials restart and resume
        tuner = tune.Tuner.restore(str(path), trainable=fn, resume_errored=True, restart_errored=False,
                                   resume_unfinished=True)
    else:
        tuner = tune.Tuner(fn, param_space={"trial": tune.grid_search(trials)},
                           run_config=tune.RunConfig(name=name, storage_path=storage, verbose=1,
                                                     failure_config=tune.FailureConfig(max_failures=max_failures)))
    results = tuner.fit()
    out = []
    for r in results:
        out.append({"trial": r.config["trial"], "metrics": dict(r.metrics or {}),
                    "error": None if r.error is None else str(r.error).splitlines()[0][:300]})
    return out
