"""Every bad input a hostile-but-realistic user tried: a one-line error with exit code 2, no traceback, and
no existing file changed. The cases live in ``tests/bad_inputs/`` (one table per area); this file runs them.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import pkgutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import bad_inputs
from bad_inputs import Case

ROOT = Path(__file__).resolve().parents[1]
ENTRIES = {"restorevar": ["-m", "restorevar.cli"], "validate": ["-m", "pipelines.validate"]}


def _all_cases() -> list[Case]:
    cases: list[Case] = []
    for mod in pkgutil.iter_modules(bad_inputs.__path__):
        if mod.name.startswith("_"):  # shared helpers, not a table
            continue
        cases.extend(importlib.import_module(f"bad_inputs.{mod.name}").CASES)
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return cases


CASES = _all_cases()


def _snapshot(root: Path) -> dict[str, str]:
    """Content hash (or kind) of every entry under root, not following links."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            if stat.S_ISREG(st.st_mode):
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if os.access(p, os.R_OK) else f"unreadable {st.st_size} {st.st_mtime_ns}"
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            else:
                out[rel] = f"special {stat.S_IFMT(st.st_mode)}"
    return out


@dataclass
class _Ran:
    work: Path
    before: dict[str, str]
    proc: subprocess.CompletedProcess | None = None
    problem: str = ""  # the setup's exception, or a hang


def _prepare(case: Case, work: Path) -> tuple[_Ran, list[str]]:
    try:
        argv = case.setup(work)
    except Exception as e:  # noqa: BLE001 - reported by the case's own test, not by every test of the module
        return _Ran(work, {}, problem=f"setup failed: {e!r}"), []
    return _Ran(work, _snapshot(work)), argv


def _run(case: Case, ran: _Ran, argv: list[str]) -> _Ran:
    if ran.problem:
        return ran
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCH_HOME": str(ran.work.parent / "torch_home"),
           "XDG_CACHE_HOME": str(ran.work.parent / "cache")}
    env.update(getattr(case.setup, "env", {}))
    try:
        ran.proc = subprocess.run([sys.executable, *ENTRIES[case.entry], *argv], cwd=ran.work, env=env,
                                  capture_output=True, text=True, timeout=case.timeout_s, stdin=subprocess.DEVNULL,
                                  check=False)
    except subprocess.TimeoutExpired:
        ran.problem = f"hung for {case.timeout_s} s"
    return ran


@pytest.fixture(scope="module")
def ran(request, tmp_path_factory) -> dict[str, _Ran]:
    """Every selected case run once (``-k`` selects some). The setups run in turn (they seed torch's global
    RNG), then the commands as many at a time as there are cores: each is a fresh interpreter that spends
    seconds of one core on its imports, and there are over a hundred."""
    wanted = {item.callspec.params["case"].id for item in request.session.items
              if hasattr(item, "callspec") and "case" in item.callspec.params}
    prepared = []
    for case in (c for c in CASES if c.id in wanted):
        work = tmp_path_factory.mktemp("bad") / "work"
        work.mkdir()
        prepared.append((case, *_prepare(case, work)))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        done = list(pool.map(lambda job: _run(*job), prepared))
    return {case.id: r for (case, *_), r in zip(prepared, done)}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ran: dict[str, _Ran]):
    r = ran[case.id]
    if r.problem:
        pytest.fail(r.problem)
    err = r.proc.stderr
    assert "Traceback" not in err, err
    assert r.proc.returncode == case.code, f"exit {r.proc.returncode}, stderr:\n{err}"
    assert case.fragment.lower() in err.lower(), err
    error_lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(error_lines) == 1, err
    after = _snapshot(r.work)
    changed = sorted(k for k, v in r.before.items() if after.get(k) != v)
    assert not changed, f"changed or deleted: {changed}"


def test_every_area_has_cases():
    assert len(CASES) >= 1
    print(f"{len(CASES)} bad inputs")
