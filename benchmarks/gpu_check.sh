#!/usr/bin/env bash
# The GPU check as one script: the bench on `paper` at batch 1 and 16, fp32 (TF32 on, as the official) and
# bf16, with the bf16 agreement check, and the training throughput of the paper transformer and tokenizer at
# the official per-GPU batch (24; global 48 over 2 GPUs). The JSON is rewritten after every phase, and a phase
# that runs out of memory is recorded under "errors" while the others go on. A phase that fails in any other
# way does not stop the script either: each phase's exit status lands in $OUT/phases.txt, and the script exits
# non-zero at the end if any phase failed.
#   OUT=/some/folder bash benchmarks/gpu_check.sh [path/to/converted_paper_checkpoint.pt]
# Without a checkpoint the weights are random (seeded): the timings hold, but bf16 agreement on near-uniform
# random logits says little; with `restorevar convert-official ... --out restorevar_paper.pt` it is the real one.
set -uo pipefail  # no -e: one failed phase must not cost the others their device time
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 DVC_NO_ANALYTICS=1 RAY_USAGE_STATS_ENABLED=0
OUT=${OUT:-bench-gpu}
mkdir -p "$OUT"
PY=${PY:-python}
: > "$OUT/phases.txt"
failed=0
phase() {  # phase NAME STATUS: record it, and remember a failure for the exit status
    echo "$1 $2" >> "$OUT/phases.txt"
    if [[ $2 -ne 0 ]]; then failed=1; echo "gpu_check: phase $1 failed (exit $2); going on" >&2; fi
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv"
phase nvidia-smi $?
model=(--preset paper)
if [[ $# -ge 1 ]]; then model=(--checkpoint "$1"); fi
"$PY" -m restorevar.cli bench "${model[@]}" --device cuda --batch-size 1 16 --dtype fp32 bf16 \
    --warmup 5 --repeats 20 --agreement-images 16 --train-batch-size 24 --train-steps 10 \
    --out "$OUT/bench_paper.json" 2>&1 | tee "$OUT/bench_paper.log"
phase bench $?

# Ray Tune on the GPU: the tiny profile's stages up to the transformer, whose trial takes a GPU
# (tune.gpus_per_worker: 1, one process: NCCL allows one rank per GPU, so a one-GPU machine runs workers: 1).
# Its training rate (images_per_s) lands in ray_train_gpu.json; the project copy stays in a temp folder.
"$PY" - "$OUT" "${RAY_GPUS:-1}" <<'PY' 2>&1 | tee "$OUT/ray_train_gpu.log"
import json, shutil, subprocess, sys, tempfile, time
from pathlib import Path
from benchmarks.tiny_run import copy_project, env, tool
out, gpus = Path(sys.argv[1]).resolve(), float(sys.argv[2])
with tempfile.TemporaryDirectory() as tmp:
    proj = copy_project(Path(tmp), lambda raw: raw["train_transformer"]["tiny"].update(tune={"gpus_per_worker": gpus}))
    started = time.perf_counter()
    r = subprocess.run([tool("dvc"), "repro", "train_transformer"], cwd=proj, env=env(), capture_output=True, text=True)
    print(r.stdout[-3000:] + r.stderr[-3000:])
    s = json.loads((proj / "checkpoints" / "train_transformer.json").read_text()) if r.returncode == 0 else {}
    (out / "ray_train_gpu.json").write_text(json.dumps(
        {"rc": r.returncode, "gpus_per_worker": gpus, "seconds_repro": round(time.perf_counter() - started, 1),
         "images_per_s": s.get("metrics", {}).get("images_per_s"), "summary": s}, indent=1) + "\n")
PY
phase ray_train $?
exit $failed
