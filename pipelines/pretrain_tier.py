"""`make pretrain`: reproduce the pretraining tier, ``pretrain/pipeline.yaml``, with DVC.

DVC reads every file named dvc.yaml in a project. Were the tier one of them, a plain ``dvc repro`` or
``dvc status`` would take it in: in a fresh clone it has no lock and no outputs, so ``dvc status`` would list it
as changed and ``dvc repro`` would rebuild the corpus from the Debian mirror and pretrain for an hour before the
study. So the tier is kept under another name, and this puts it in place as ``pretrain/dvc.yaml`` for one
``dvc repro pretrain/dvc.yaml``, then removes that copy, whether DVC succeeds, fails or is interrupted. The
tier's lock (``pretrain/dvc.lock``) stays, so the next run skips what has not changed.

    python -m pipelines.pretrain_tier [extra dvc repro arguments]
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from pipelines.params_yaml import ROOT

TIER = ROOT / "pretrain" / "pipeline.yaml"  # tracked: the tier's stages
AS_DVC = ROOT / "pretrain" / "dvc.yaml"  # the copy DVC reads during a run; never tracked


def run_tier(command: list[str], tier: Path = TIER, as_dvc: Path = AS_DVC) -> int:
    """``command``'s exit code, run while ``as_dvc`` holds the tier; ``as_dvc`` is gone afterwards (a copy left
    by a run killed outright is replaced)."""
    def stop(signum, frame):  # a SIGTERM cleans up too (Ctrl-C already unwinds as KeyboardInterrupt)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    tmp = as_dvc.with_name(f".{as_dvc.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(tier.read_bytes())
        os.replace(tmp, as_dvc)
        return subprocess.call(command, cwd=ROOT)
    except KeyboardInterrupt:
        print("pretrain_tier: interrupted", file=sys.stderr)
        return 130
    finally:
        tmp.unlink(missing_ok=True)
        as_dvc.unlink(missing_ok=True)
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    dvc = Path(sys.executable).with_name("dvc")
    return run_tier([str(dvc) if dvc.exists() else "dvc", "repro", "pretrain/dvc.yaml", *args])


if __name__ == "__main__":
    sys.exit(main())
