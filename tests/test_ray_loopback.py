"""A one-machine study's Ray listens on the loopback interface only: the GCS, the raylet, the workers and the
agents, started the way every training stage starts them (``pipelines.tuning.init`` with no address)."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# run in a fresh interpreter: Ray's settings are read at import, and this test must see what a stage sees
PROBE = """
import json, os, psutil, ray
from pipelines import tuning
tuning.init(None)

@ray.remote
def work():
    return os.getpid()

ray.get([work.remote() for _ in range(2)])  # a worker process is up and serving
session = ray._private.worker._global_node.get_session_dir_path()
pids = {os.getpid()} | {c.pid for c in psutil.Process().children(recursive=True)}
for p in psutil.process_iter(["cmdline"]):  # daemons that left the process tree still name the session
    if any(session in a for a in (p.info["cmdline"] or [])):
        pids.add(p.pid)
listening = [(c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()) for c in psutil.net_connections("tcp")
             if c.status == psutil.CONN_LISTEN and c.pid in pids]
ray.shutdown()
print("LISTEN " + json.dumps(listening))
"""


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def test_local_ray_binds_only_loopback():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**env, "RAY_USAGE_STATS_ENABLED": "0"},
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    [line] = [x for x in r.stdout.splitlines() if x.startswith("LISTEN ")]
    listening = json.loads(line[len("LISTEN "):])
    names = {name for _, _, name in listening}
    assert "gcs_server" in names and "raylet" in names, listening  # the probe saw Ray's own daemons
    exposed = [x for x in listening if not _is_loopback(x[0])]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"


def test_the_loopback_check_itself_tells_the_addresses_apart():
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("::ffff:127.0.0.1")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("::") and not _is_loopback("192.0.2.2")


def test_joining_a_cluster_carries_the_caches_to_workers_and_leaves_loopback_mode_off(monkeypatch):
    import ray

    from pipelines import tuning

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.delenv(tuning.LOOPBACK_ONLY, raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.setenv("TORCH_HOME", "/shared/weights")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SOME_SECRET", "not for workers")
    tuning.init(None)
    assert seen["address"] == "10.0.0.1:6379"
    env = seen["runtime_env"]["env_vars"]
    assert env["TORCH_HOME"] == "/shared/weights" and env["HF_HUB_OFFLINE"] == "1" and "SOME_SECRET" not in env
    assert tuning.LOOPBACK_ONLY not in os.environ  # a cluster's nodes must reach each other


def test_a_cluster_that_refuses_the_token_is_a_one_line_error(monkeypatch):
    import ray

    from pipelines import tuning
    from restorevar.errors import UserError

    def refuse(**_):  # what Ray 2.60 raises when the driver has RAY_AUTH_MODE unset and the head wants a token
        raise ray.exceptions.AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    with pytest.raises(UserError, match="RAY_AUTH_MODE=token"):
        tuning.init(None)
