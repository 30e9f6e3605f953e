"""With ``tracking.mlflow_uri`` naming a tracking server, runs' artifacts go through the server to the store it
was told to use (``--artifacts-destination``), not to a file:// path on whichever node logged them."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.mlflow_runs import TrialRun, ensure_experiment, is_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    store = tmp_path / "server-artifacts"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                             f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(store),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer in 60 s")
        yield uri, store
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_artifacts_go_through_the_tracking_server(server, tmp_path):
    uri, store = server
    exp_id = ensure_experiment(uri, "train_tokenizer", tmp_path / "mlartifacts")
    run = TrialRun(uri, exp_id, "train_tokenizer/main", tmp_path / "run" / "mlflow_run_id", tags={})
    (tmp_path / "run").mkdir(exist_ok=True)
    note = tmp_path / "run" / "note.txt"
    note.write_text("logged through the server")
    run.log_artifact(note)
    run.end(True)
    assert not (tmp_path / "mlartifacts").exists()  # the local default was not used
    [stored] = list(store.rglob("note.txt"))
    assert stored.read_text() == "logged through the server"


def test_only_http_uris_are_servers():
    assert is_server("http://head:5000") and is_server("HTTPS://mlflow.example")
    assert not is_server("sqlite:///tmp/mlflow.db") and not is_server("/tmp/mlruns")
