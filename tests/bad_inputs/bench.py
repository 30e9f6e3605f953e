"""`restorevar bench`: settings and output paths that used to fail only after the whole benchmark had run.

Each is found before any timing starts; the default preset's benchmark takes minutes, longer than these
cases' time limit, so a check that came after it fails the case.
"""
from __future__ import annotations

from pathlib import Path

from bad_inputs import Case


def _bench(*args: str, before=None):
    def setup(tmp: Path) -> list[str]:
        if before:
            before(tmp)
        return ["bench", *args]
    return setup


def _folder(tmp: Path) -> None:
    (tmp / "results").mkdir()


def _file(tmp: Path) -> None:
    (tmp / "notes.txt").write_text("mine")


def _checkpoint(tmp: Path) -> None:
    (tmp / "model.pt").write_bytes(b"a checkpoint the JSON must not replace")


CASES = [
    Case("bench-out-is-a-folder", _bench("--out", "results", before=_folder),
         "--out results is a folder; give a file name, e.g. results/out.json", timeout_s=60),
    Case("bench-out-under-a-file", _bench("--out", "notes.txt/bench.json", before=_file),
         "cannot write --out notes.txt/bench.json: ", timeout_s=60),
    Case("bench-out-is-the-checkpoint", _bench("--checkpoint", "model.pt", "--out", "model.pt", before=_checkpoint),
         "--out model.pt is the checkpoint itself", timeout_s=60),
    Case("bench-unknown-device", _bench("--device", "tpu9"), "unknown device 'tpu9'", timeout_s=60),
    Case("bench-zero-train-steps", _bench("--train-steps", "0"), "--train-steps must be >= 1", timeout_s=60),
    Case("bench-negative-seed", _bench("--seed", "-1"), "--seed must be in [0, 2**64), got -1", timeout_s=60),
    Case("bench-zero-train-batch", _bench("--train-batch-size", "0"), "--train-batch-size and --train-steps",
         timeout_s=60),
]
