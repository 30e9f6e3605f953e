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


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    argv = case.setup(work)
    before = _snapshot(work)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCH_HOME": str(tmp_path / "torch_home"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.update(getattr(case.setup, "env", {}))
    try:
        proc = subprocess.run([sys.executable, *ENTRIES[case.entry], *argv], cwd=work, env=env, capture_output=True,
                              text=True, timeout=case.timeout_s, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {case.timeout_s} s")
    err = proc.stderr
    assert "Traceback" not in err, err
    assert proc.returncode == case.code, f"exit {proc.returncode}, stderr:\n{err}"
    assert case.fragment.lower() in err.lower(), err
    error_lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(error_lines) == 1, err
    after = _snapshot(work)
    changed = sorted(k for k, v in before.items() if after.get(k) != v)
    assert not changed, f"changed or deleted: {changed}"


def test_every_area_has_cases():
    assert len(CASES) >= 1
    print(f"{len(CASES)} bad inputs")
