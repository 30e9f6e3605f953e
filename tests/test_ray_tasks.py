"""The evaluation stages run as Ray tasks (``pipelines.tuning.run_task``) with the device their params ask for:
a GPU asked for where the cluster has none is a one-line error, not a run on CPU; a UserError inside the task
comes back as itself; and a training stage's resources that no node has are an error before Tune waits on them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# a fresh interpreter, as a stage starts its own Ray; prints one JSON line of outcomes
PROBE = """
import json, os, sys
from pathlib import Path
from pipelines import tuning
from restorevar.errors import UserError

def where():
    import torch
    return {"cwd": os.getcwd(), "pid": os.getpid(), "cuda": torch.cuda.is_available()}

def refuses():
    raise UserError("the test split is missing; run dvc repro data")

out = {}
out["cpu"] = tuning.run_task(where, what="evaluate", device="cpu", address=None, root=Path(sys.argv[1]))
out["auto"] = tuning.run_task(where, what="evaluate", device="auto", address=None, root=Path(sys.argv[1]))
for name, fn, device in (("cuda", where, "cuda"), ("user_error", refuses, "cpu")):
    try:
        tuning.run_task(fn, what="evaluate", device=device, address=None, root=Path(sys.argv[1]))
        out[name] = "ran"
    except UserError as e:
        out[name] = str(e)
try:
    tuning.check_resources("train_transformer.tune", {"CPU": 1, "GPU": 1}, "lower it in params.yaml")
    out["gpu_trial"] = "accepted"
except UserError as e:
    out["gpu_trial"] = str(e)
out["driver_pid"] = os.getpid()
print("OUT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the no-GPU answers; this machine has a GPU")
    project = tmp_path_factory.mktemp("project")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RESTOREVAR_ROOT")}
    r = subprocess.run([sys.executable, "-c", PROBE, str(project)], cwd=ROOT, capture_output=True, text=True,
                       env={**env, "RAY_USAGE_STATS_ENABLED": "0"}, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    [line] = [x for x in r.stdout.splitlines() if x.startswith("OUT ")]
    return {**json.loads(line[4:]), "stdout": r.stdout, "project": str(project)}


def test_an_evaluation_runs_as_a_ray_task_in_the_project_folder(outcomes):
    for device in ("cpu", "auto"):
        assert outcomes[device]["pid"] != outcomes["driver_pid"]  # a Ray worker, not the driver
        assert outcomes[device]["cwd"] == outcomes["project"] and not outcomes[device]["cuda"]
    assert "evaluate: no GPU in the Ray cluster, running on CPU (device auto)" in outcomes["stdout"]


def test_a_gpu_asked_for_where_there_is_none_is_an_error_not_a_cpu_run(outcomes):
    assert outcomes["cuda"] == ("evaluate: device cuda asks for a GPU but the Ray cluster has none; set device: cpu "
                                "or auto, or add a node with a GPU")
    assert outcomes["gpu_trial"] == ("train_transformer.tune asks for 1 GPU but the Ray cluster has 0; lower it in "
                                     "params.yaml")


def test_a_user_error_inside_the_task_comes_back_as_its_one_line(outcomes):
    assert outcomes["user_error"] == "the test split is missing; run dvc repro data"
