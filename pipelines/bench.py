"""DVC stage `bench`: `restorevar bench` on this profile's trained model, logged to MLflow.

Times the plain and the fast inference path (each dtype in params), their agreement and the training
throughput of the transformer and tokenizer; writes results/bench.json (read by the report and, in CI, by
the regression check) and logs it as one run of the MLflow experiment `bench`: the settings as params, the
leaf numbers (speed-ups, ms per image, token agreement, training images/s) as metrics, the JSON as an artifact.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from pipelines import mlflow_runs, tuning
from pipelines.params import ROOT, Params, checkpoint_path
from pipelines.stage_main import stage_main
from restorevar.fileio import atomic_write
from restorevar.inference.bench import format_table, run_bench

OUT = ROOT / "results" / "bench.json"


def run() -> dict:
    p = Params()
    b = p.bench
    result = run_bench(checkpoint=checkpoint_path("train_refiner"), batch_sizes=tuple(b.batch_sizes),
                       dtypes=tuple(b.dtypes), warmup=b.warmup, repeats=b.repeats, agreement_images=b.agreement_images,
                       train=b.train, train_batch_size=b.train_batch_size, train_steps=b.train_steps,
                       device=b.device, seed=b.seed)
    result["profile"], result["model_preset"] = p.profile, p.model.preset
    result["weights"] = f"checkpoint {checkpoint_path('train_refiner').relative_to(ROOT)}"  # not this machine's path
    text = json.dumps(result, indent=1) + "\n"
    atomic_write(OUT, lambda tmp: Path(tmp).write_text(text))
    mlflow_runs.log_run(p.mlflow_uri, "bench", ROOT / "mlartifacts", f"bench/{p.profile}",
                     params={"profile": p.profile, "preset": p.model.preset, **asdict(b)},
                     metrics=result["metrics"], artifacts=[OUT],
                     tags={"device": result["device"], "torch": result["torch"], "weights": result["weights"]})
    return result


def main() -> int:
    started = time.perf_counter()

    def work() -> dict:
        p = Params()
        return tuning.run_task(run, what="bench", device=p.bench.device, address=p.ray_address, root=ROOT)

    return stage_main("bench", work, lambda result: [
        format_table(result),
        f"bench: wrote {OUT.relative_to(ROOT)} and logged MLflow experiment 'bench' in {time.perf_counter() - started:.0f} s"])


if __name__ == "__main__":
    sys.exit(main())
