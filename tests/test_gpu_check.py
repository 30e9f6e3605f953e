"""benchmarks/gpu_check.sh on a machine without a GPU: its phases run under stand-ins for nvidia-smi and python,
so that what it does when a phase fails is tested where CI runs."""
import os
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _stand_in(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_a_failed_bench_does_not_stop_the_ray_phase_and_the_exit_status_says_so(tmp_path):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    _stand_in(bin_ / "nvidia-smi", 'echo "name, memory.total"\n')
    calls = tmp_path / "calls.txt"
    # the bench phase fails with an error other than out-of-memory; the Ray phase (python reading a
    # here-document) succeeds
    _stand_in(bin_ / "py", f'echo "$1 $2" >> {calls}\nif [[ "$2" == "restorevar.cli" ]]; then echo boom >&2; exit 3; fi\n'
                           'cat > /dev/null\n')
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, check=False,
                       env={**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "PY": str(bin_ / "py"),
                            "OUT": str(out)})
    assert r.returncode == 1, r.stderr
    assert (out / "phases.txt").read_text().split("\n")[:3] == ["nvidia-smi 0", "bench 3", "ray_train 0"]
    assert calls.read_text().splitlines() == ["-m restorevar.cli", f"- {out}"]  # the Ray phase ran after it
    assert "phase bench failed (exit 3); going on" in r.stderr


def test_every_phase_passing_exits_0(tmp_path):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    _stand_in(bin_ / "nvidia-smi", "echo gpu\n")
    _stand_in(bin_ / "py", "cat > /dev/null\n")
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, check=False,
                       env={**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "PY": str(bin_ / "py"),
                            "OUT": str(tmp_path / "out")})
    assert r.returncode == 0, r.stderr
