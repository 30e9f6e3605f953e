"""Run the whole study on the `tiny` profile in a temporary copy of the project, and keep its metrics.json.

The speed benchmark's summary (results/bench.json "metrics") is added under the key ``bench``, and each
ablation family's metrics.json (variant means over seeds, with their SD) under ``ablations.<family>``. CI
compares that file with ``benchmarks/baseline.json`` (``restorevar regress``). The pipeline tests run the
same study (``copy_project``, the same params) and, given ``RESTOREVAR_TINY_METRICS``, write this file from it
(``write_metrics``): CI then runs the tiny study once, not twice. The copy holds the project's tracked and
untracked-but-not-ignored files, so what runs is exactly the working tree, without touching its own results,
DVC state or MLflow store.

    python -m benchmarks.tiny_run --out tiny-metrics.json
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from restorevar.fileio import atomic_write

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    e.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}", HF_HUB_OFFLINE="1",
             NO_ALBUMENTATIONS_UPDATE="1", DVC_NO_ANALYTICS="1", RAY_USAGE_STATS_ENABLED="0", PYTHONHASHSEED="0")
    return e


def copy_project(dest: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """The working tree's files in ``dest`` with ``profile: tiny`` (then ``edit`` applied), and DVC initialised."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        if f.startswith((".dvc/", "dvc.lock", "metrics.json", "reports/")) or not (ROOT / f).is_file():
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    raw = yaml.safe_load((dest / "params.yaml").read_text())
    raw["profile"] = "tiny"
    if edit:
        edit(raw)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run([tool("dvc"), "init", "--no-scm", "-q"], cwd=dest, check=True, env=env())
    config = configparser.ConfigParser()  # the project's own DVC settings (e.g. the offline plots page)
    config.read(ROOT / ".dvc" / "config")
    for section in config.sections():
        for key, value in config[section].items():
            subprocess.run([tool("dvc"), "config", f"{section}.{key}", value], cwd=dest, check=True, env=env())
    return dest


def repro(project: Path, target: str = "track", timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([tool("dvc"), "repro", target], cwd=project, env=env(), capture_output=True, text=True,
                          check=False, timeout=timeout)


def write_metrics(project: Path, out: Path) -> None:
    """The finished study's metrics.json, with the bench and ablation numbers the baseline holds, in ``out``."""
    metrics = json.loads((project / "metrics.json").read_text())
    # the speed benchmark's leaf numbers, so the baseline can hold e.g. bench.token_agreement.fp32
    metrics["bench"] = json.loads((project / "results" / "bench.json").read_text())["metrics"]
    # each ablation variant's mean over its training seeds with their SD: the baseline's seed spreads
    metrics["ablations"] = {f.parent.name: json.loads(f.read_text())
                            for f in sorted((project / "results" / "ablations").glob("*/metrics.json"))}
    text = json.dumps(metrics, indent=1) + "\n"
    atomic_write(out, lambda tmp: Path(tmp).write_text(text))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="where to copy the run's metrics.json")
    ap.add_argument("--report", type=Path, help="also copy reports/report.md here")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="restorevar-tiny-") as tmp:
        project = copy_project(Path(tmp))
        r = repro(project)
        if r.returncode != 0:
            print((r.stdout + r.stderr)[-6000:], file=sys.stderr)
            print(f"tiny_run: dvc repro failed (exit {r.returncode})", file=sys.stderr)
            return 1
        write_metrics(project, args.out)
        if args.report:
            shutil.copyfile(project / "reports" / "report.md", args.report)
    print(f"tiny_run: the tiny study ran in {time.perf_counter() - started:.0f} s; metrics in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
