"""`restorevar bench`: both paths timed in one run, agreement, training throughput, JSON and the report section."""
import json
import math

import pytest
import torch

from conftest import make_tiny
from restorevar.checkpoint import save_checkpoint
from restorevar.cli import main
from restorevar.inference.bench import photo_pairs, run_bench
from restorevar.inference.engine import bf16_problem
from restorevar.report.document import Document
from restorevar.report.speed import speed_section

DTYPES = ("fp32",) if bf16_problem(torch.device("cpu")) else ("fp32", "bf16")


@pytest.fixture(scope="module")
def result():
    return run_bench(preset="tiny", batch_sizes=(1, 2), dtypes=DTYPES, warmup=0, repeats=1, agreement_images=3,
                     train_batch_size=2, train_steps=1, device="cpu", log=lambda s: None)


def test_times_plain_and_fast_paths_per_component(result):
    assert result["device"].startswith("cpu (") and result["timer"] == "perf_counter"
    for b in ("b1", "b2"):
        rows = result["inference"][b]
        assert set(rows) == {"plain_fp32", *(f"fast_{d}" for d in DTYPES)}
        for r in rows.values():
            s = r["seconds_per_image"]
            assert set(s) == {"encode", "transformer", "refiner", "decode", "end_to_end"}
            assert all(v > 0 for v in s.values()) and r["peak_memory_bytes"] is None  # GPU-only
        ratio = rows["plain_fp32"]["seconds_per_image"]["end_to_end"] / rows["fast_fp32"]["seconds_per_image"]["end_to_end"]
        assert result["speedup"][b]["fp32"] == pytest.approx(ratio)
    assert result["paths"]["plain"]["cross_kv_once"] is False and result["paths"]["fast_fp32"]["kv_cache"] == "static"


def test_fast_fp32_agrees_exactly_and_training_is_measured(result):
    a = result["agreement"]["fp32"]
    assert a["tokens_identical"] and a["token_agreement"] == 1.0 and a["teacher_forced_token_agreement"] == 1.0
    assert a["image_max_abs_diff"] < 1e-4 and a["images"] == 3
    for name in ("transformer", "tokenizer"):
        t = result["training"][name]
        assert t["batch_size"] == 2 and t["images_per_second"] == pytest.approx(2 / t["seconds_per_step"])
    m = result["metrics"]
    assert m["token_agreement"]["fp32"] == 1.0 and set(m["train_images_per_second"]) == {"transformer", "tokenizer"}
    # the plain path recomputes cross-attention K/V in every block at every scale
    assert m["gflops_per_image"]["plain"] > m["gflops_per_image"]["fast"] > 0
    json.dumps(result, allow_nan=False)  # strict JSON: no NaN or infinity anywhere


def test_inputs_are_degraded_test_photographs():
    clean, deg = photo_pairs(3, 32, seed=0)
    assert clean.shape == deg.shape == (3, 3, 32, 32) and clean.min() >= -1 and clean.max() <= 1
    assert not torch.equal(clean, deg) and not torch.equal(clean[0], clean[1])
    assert torch.equal(photo_pairs(3, 32, seed=0)[1], deg)  # seeded


def test_cli_writes_json_for_a_checkpoint_and_the_report_shows_it(tmp_path, capsys):
    m = make_tiny(gains=0.5)
    ck = tmp_path / "train_refiner.pt"
    save_checkpoint(ck, config=m.cfg, components={"vqvae": m.vqvae.state_dict(),
                    "transformer": m.transformer.state_dict(), "refiner": m.refiner.state_dict()})
    out = tmp_path / "results" / "bench.json"
    assert main(["bench", "--checkpoint", str(tmp_path), "--batch-size", "1", "--repeats", "1", "--warmup", "0",
                 "--agreement-images", "2", "--no-train", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 1 | plain_fp32 |" in printed and "| 1 | fast_fp32 |" in printed
    b = json.loads(out.read_text())
    assert b["weights"] == f"checkpoint {ck}" and "training" not in b and b["agreement"]["fp32"]["tokens_identical"]
    doc = Document("t")
    speed_section(doc, out.parent)
    md = doc.to_markdown(tmp_path)
    assert "Inference speed: plain vs fast path" in md and "plain_fp32" in md and "teacher-forced" in md


@pytest.mark.parametrize(("args", "needle"), [
    (["--dtype", "fp16"], "invalid choice: 'fp16'"),
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--checkpoint", "/nope/model.pt"], "checkpoint not found"),
    (["--repeats", "0"], "must be >= 1"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, needle, capsys):
    with pytest.raises(SystemExit) as e:
        rc = main(["bench", "--no-train", *args])
        raise SystemExit(rc)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and needle in err and err.count("\n") == 0


def test_paths_are_timed_round_robin():
    from restorevar.metrics.cost import time_interleaved

    calls = []
    med = time_interleaved(torch.device("cpu"), {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                           warmup=1, repeats=2)
    assert calls == ["a", "b"] * 3 and set(med) == {"a", "b"} and all(v >= 0 for v in med.values())


@pytest.mark.parametrize(("args", "needle"), [
    (["--out", "{tmp}"], "is a folder; give a file name"),
    (["--out", "{tmp}/file.txt/bench.json"], "is a file, not a folder"),
    (["--checkpoint", "{ck}", "--out", "{ck}"], "is the checkpoint itself"),
    (["--device", "tpu9"], "unknown device 'tpu9'"),
    (["--train-steps", "0"], "--train-steps must be >= 1"),
])
def test_bad_outputs_and_settings_fail_before_the_benchmark_runs(args, needle, tmp_path, capsys, monkeypatch):
    from restorevar.inference import bench

    (tmp_path / "file.txt").write_text("x")
    ck = tmp_path / "model.pt"
    ck.write_bytes(b"weights")
    monkeypatch.setattr(bench, "time_paths", lambda *a, **k: pytest.fail("the benchmark ran before the check"))
    args = [a.format(tmp=tmp_path, ck=ck) for a in args]
    assert main(["bench", "--preset", "tiny", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and err.count("\n") == 0
    assert ck.read_bytes() == b"weights"


def test_agreement_psnr_is_none_only_when_all_images_are_identical():
    from restorevar.inference.bench import _psnr

    a = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.8 - 0.9  # +0.01 stays in range
    b = a.clone()
    assert _psnr(a, b) is None
    b[2] += 0.01
    assert _psnr(a, b) == pytest.approx(10 * math.log10(1 / (0.005**2 / 3)), rel=1e-4)


def test_a_phase_out_of_gpu_memory_is_recorded_and_the_others_go_on(monkeypatch):
    from restorevar.inference import bench

    real = bench.time_paths

    def time_paths(engines, x, warmup, repeats):
        if x.shape[0] == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(engines, x, warmup, repeats)

    monkeypatch.setattr(bench, "time_paths", time_paths)
    snapshots = []
    r = run_bench(preset="tiny", batch_sizes=(1, 2), dtypes=("fp32",), warmup=0, repeats=1, agreement_images=2,
                  train_batch_size=2, train_steps=1, device="cpu", log=lambda s: None,
                  on_phase=lambda res: snapshots.append(json.loads(json.dumps(res))))
    assert r["complete"] and set(r["inference"]) == {"b1"} and set(r["errors"]) == {"inference_b2"}
    assert r["errors"]["inference_b2"].startswith("out of memory: CUDA out of memory")
    assert set(r["training"]) == {"transformer", "tokenizer"} and "fp32" in r["agreement"]
    assert set(r["metrics"]["ms_per_image"]) == {"b1"}
    assert "not measured: inference_b2: out of memory" in bench.format_table(r)
    # the result was handed over after every phase: b1, b2, flops, agreement, two trainings, the end
    assert len(snapshots) == 7 and "b1" in snapshots[0]["inference"] and not snapshots[0]["complete"]
    assert "transformer" in snapshots[4]["training"] and "tokenizer" not in snapshots[4]["training"]


def test_cli_keeps_the_measured_phases_when_a_later_one_fails(tmp_path, monkeypatch, capsys):
    from restorevar.inference import bench

    def boom(*a, **k):
        raise KeyboardInterrupt  # stands in for a kill, or an error no phase survives, during training
    monkeypatch.setattr(bench, "training_throughput", boom)
    out = tmp_path / "bench.json"
    assert main(["bench", "--preset", "tiny", "--batch-size", "1", "--repeats", "1", "--warmup", "0",
                 "--agreement-images", "1", "--device", "cpu", "--out", str(out)]) == 130
    saved = json.loads(out.read_text())
    assert not saved["complete"] and "b1" in saved["inference"] and "fp32" in saved["agreement"]


def test_checkpoint_bytes_refuses_an_unknown_revision_in_one_line():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "checkpoint_bytes.py"
    r = subprocess.run([sys.executable, str(script), "no-such-revision"], capture_output=True, text=True, check=False,
                       timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    [line] = r.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith("checkpoint_bytes: error: cannot check out 'no-such-revision'")
