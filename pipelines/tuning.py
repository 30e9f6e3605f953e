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
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # Train workers' prints reach the driver once, not twice


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
              "PYTHONHASHSEED", "RAY_CHDIR_TO_TRIAL_DIR", "RAY_USAGE_STATS_ENABLED", "RAY_TRAIN_ENABLE_PRINT_PATCH")


def run_task(fn: Callable[[], Any], *, what: str, device: str, address: str | None, root: Path) -> Any:
    """``fn()`` as a Ray task on a node with what ``device`` asks for: one GPU for cuda (an error where the
    cluster has none, not a run on CPU), one for auto where the cluster has one (else CPU, said in a line), none
    for cpu; and the CPUs of the largest node, as the stage had them when it ran in the driver. The task runs in
    the project folder (RESTOREVAR_ROOT on a node that mounts it elsewhere); a UserError comes back as itself."""
    init(address)
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if device.startswith("cuda") and gpus < 1:
        raise UserError(f"{what}: device {device} asks for a GPU but the Ray cluster has none; set device: cpu or "
                        "auto, or add a node with a GPU")
    use_gpu = device.startswith("cuda") or (device == "auto" and gpus >= 1)
    if device == "auto" and not use_gpu:
        print(f"{what}: no GPU in the Ray cluster, running on CPU (device auto)", flush=True)
    cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=1)
    task = ray.remote(num_cpus=cpus, num_gpus=1 if use_gpu else 0, max_retries=0)(_in_project)
    try:
        return ray.get(task.remote(fn, str(root)))
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, UserError):
            raise UserError(str(e.cause)) from None
        raise


def _in_project(fn: Callable[[], Any], root: str) -> Any:
    os.chdir(os.environ.get("RESTOREVAR_ROOT") or root)
    return fn()


def worker_env() -> dict[str, str]:
    return {k: os.environ[k] for k in WORKER_ENV if k in os.environ}


def node() -> str:
    """From inside a trial: the Ray node it runs on (its IP and the node id's first 12 characters), for the
    run's tags: on a cluster, what ran where."""
    import ray

    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:12]}"


def report(metrics: dict[str, float], data_parallel: bool = False) -> None:
    """From inside a trial: report metrics to Tune (from a Ray Train worker: to Train, which passes rank 0's
    on to Tune; every rank reports, as Train's report is a barrier). Checkpoints do not go through Ray's
    storage: each trainer's own last.pt in its run folder is the one copy, what a restarted or restored trial
    resumes from (Tune would keep two more copies of every checkpoint, gigabytes each at the paper's size)."""
    if data_parallel:
        import ray.train

        ray.train.report(metrics)
    else:
        from ray import tune

        tune.report(metrics)


def rank(data_parallel: bool) -> int:
    """From inside a trial: this process's rank among the trial's Ray Train workers (0 for a one-process trial)."""
    if not data_parallel:
        return 0
    import logging

    import ray.train

    # Train logs every report's metrics at INFO, a page per report: the progress lines say it in one
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    return ray.train.get_context().get_world_rank()


def check_resources(what: str, needs: dict[str, float], fix: str) -> None:
    """A request no node of the cluster could ever meet (a GPU where there is none) is an error, not a wait."""
    import ray

    have = ray.cluster_resources()
    short = [k for k, v in needs.items() if v and have.get(k, 0) < v]
    if short:
        k = short[0]
        raise UserError(f"{what} asks for {needs[k]:g} {k} but the Ray cluster has {have.get(k, 0):g}; {fix}")


# What a data-parallel trial's own process (the Train driver, which only waits on its workers) takes: a sliver
# of the head node's marker resource, no CPU. Tune takes no empty request, and a CPU would be one the workers
# lack (two 1-CPU workers on a 2-CPU machine).
TRAIN_DRIVER = {"node:__internal_head__": 0.01}


def _data_parallel(train_fn: Callable[[dict[str, Any]], None], workers: int, per_worker: dict[str, float],
                   storage: str, run_name: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], None]:
    """A Tune trial that runs ``train_fn`` on ``workers`` Ray Train workers (TorchTrainer: DDP on NCCL with
    GPUs, else gloo) and passes their reports on to Tune."""

    def trainable(config: dict[str, Any]) -> None:  # Tune names its trials after this function, as one-process ones
        import ray.train
        from ray.train.torch import TorchConfig, TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback

        gpus = per_worker.get("GPU", 0)
        trainer = TorchTrainer(
            train_fn, train_loop_config=config, torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
            scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=bool(gpus),
                                                   resources_per_worker={k: v for k, v in per_worker.items() if v}),
            # Tune retries the whole trial (max_failures): a retried group resumes every rank from last.pt
            run_config=ray.train.RunConfig(name=run_name(config["trial"]),
                                           storage_path=f"{storage.rstrip('/')}/train", callbacks=[TuneReportCallback()],
                                           failure_config=ray.train.FailureConfig(max_failures=0)))
        trainer.fit()

    return trainable


def run(
    *,
    name: str,
    trainable: Callable[[dict[str, Any]], None],
    trials: list[dict[str, Any]],
    resources: dict[str, float],
    storage: str,
    max_failures: int,
    run_name: Callable[[dict[str, Any]], str],
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Run (or restore) the experiment; returns each trial's config, last metrics and error, if any.
    ``run_name`` names a trial's Ray Train run (its folder under the storage's ``train/``) from its config.

    ``resources`` are a trial's, or with ``workers`` > 1 each of its Ray Train workers'. Such a trial's own
    process (the Train driver) takes none, so as many trials run at once as the cluster has room for groups.
    """
    import ray
    from ray import tune

    tune_config = None
    if workers > 1:
        fn = tune.with_resources(_data_parallel(trainable, workers, resources, storage, run_name), TRAIN_DRIVER)
        have = ray.cluster_resources()
        room = min(int(have.get(k, 0) // (v * workers)) for k, v in resources.items() if v) if any(
            resources.values()) else 1
        tune_config = tune.TuneConfig(max_concurrent_trials=max(1, room))
    else:
        fn = tune.with_resources(trainable, {k: v for k, v in resources.items() if v})
        # One trial after another in the same worker process: a fresh actor per trial costs about 6 s of process
        # start and imports each time, a fifth of a short ablation trial. Every trial seeds and builds its own
        # state, so reuse changes no figure.
        tune_config = tune.TuneConfig(reuse_actors=True)
    path = Path(storage) / name

    if tune.Tuner.can_restore(str(path)):  # a killed stage: its unfinished trials restart and resume
        tuner = tune.Tuner.restore(str(path), trainable=fn, resume_errored=True, restart_errored=False,
                                   resume_unfinished=True)
    else:
        tuner = tune.Tuner(fn, param_space={"trial": tune.grid_search(trials)}, tune_config=tune_config,
                           run_config=tune.RunConfig(name=name, storage_path=storage, verbose=1,
                                                     failure_config=tune.FailureConfig(max_failures=max_failures)))
    results = tuner.fit()
    out = []
    for r in results:
        out.append({"trial": r.config["trial"], "metrics": dict(r.metrics or {}),
                    "error": None if r.error is None else str(r.error).splitlines()[0][:300]})
    return out
