"""`dvc repro` on the tiny profile in a temporary copy of the project, one study shared by the tests: it runs
under Ray Tune and MLflow, a second run does no work, a params change re-runs only what depends on it, and a
stage killed with SIGKILL resumes from its checkpoint to the same bytes as its uninterrupted run."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks.tiny_run import copy_project, env, repro, tool, write_metrics
from pipelines.mlflow_runs import sha256_short

ROOT = Path(__file__).resolve().parents[1]
ABLATIONS = ["ablate@conditioning", "ablate@positions", "ablate@refiner", "ablate@decoder_losses"]
STAGES = ["data", "train_tokenizer", "finetune_decoder", "train_transformer", "train_refiner", "train_promptir", "evaluate",
          "bench", "stats",
          *ABLATIONS, "scale_space", "report", "track"]
pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                                reason="needs the project's git checkout to copy its files")


def _copy_project(dest: Path) -> Path:
    project = copy_project(dest)  # the tiny profile as it is: the study `make regress` compares
    # a git checkout of its own, so that runs record a commit (DVC was set up without git: it ignores it)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run(git + cmd, cwd=project, check=True, capture_output=True)
    return project


def _repro(project: Path) -> str:
    r = repro(project, timeout=1800)  # a guard against a hang: the tiny study takes ~10 min on 2 cores
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    return out


def _ran(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def _metrics(project: Path) -> dict:
    """Quality metrics and FLOPs; timings differ between runs, so they stay out of comparisons."""
    m = json.loads((project / "metrics.json").read_text())
    cost = m.pop("cost")
    m["gflops"] = {**cost["gflops_per_image"], **{name: c["gflops_per_image"] for name, c in cost.items()
                                                  if "gflops_per_image" in c}}  # a baseline's, beside the model's
    return m


def _per_image(project: Path) -> dict[str, bytes]:
    """Every per-image value (not only the means), as the bytes of each method's file."""
    return {f.name: f.read_bytes() for f in sorted((project / "results" / "per_image").glob("*.parquet"))}


def _components(path: Path) -> dict:
    from restorevar.checkpoint import load_checkpoint

    return load_checkpoint(path)["components"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """One uninterrupted tiny study; its first metrics are kept for the comparisons. Given
    RESTOREVAR_TINY_METRICS (CI sets it), the study's metrics are written there for `make regress`, which then
    compares them instead of running the same study again."""
    project = _copy_project(tmp_path_factory.mktemp("study"))
    out = _repro(project)
    if os.environ.get("RESTOREVAR_TINY_METRICS"):
        write_metrics(project, Path(os.environ["RESTOREVAR_TINY_METRICS"]))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True,
                            check=True).stdout.strip()
    yield {"project": project, "output": out, "metrics": _metrics(project), "per_image": _per_image(project),
           "commit": commit, "transformer": _components(project / "checkpoints" / "train_transformer.pt")}
    shutil.rmtree(project, ignore_errors=True)  # only disk: the rest of the suite keeps running


def test_repro_runs_every_stage_and_writes_metrics(done):
    assert _ran(done["output"]) == STAGES
    project, m = done["project"], done["metrics"]
    info = json.loads((project / "results" / "evaluation.json").read_text())
    assert info["profile"] == "tiny" and info["protocol"]["id"] == "rgb-crop0-resize32"
    roles = info["dataset_roles"]  # the synthetic mixes are test-only: the report's Table 2
    assert {d for d, r in roles.items() if r == "generalization"} == {"synth-cdd", "synth-lolblur"}
    assert "Generalization: datasets never trained on" in (project / "reports" / "report.md").read_text()
    assert not info["metrics"]["lpips"]["available"] and "not cached" in info["metrics"]["lpips"]["reason"]
    per = m["rgb-crop0-resize32"]
    assert set(per) == {"restorevar", "identity", "copy_input", "vqvae_roundtrip", "promptir_seed0", "promptir_seed1"}
    for method in per.values():
        assert len(method) == 8  # 7 degradations + overall
        assert all(set(v) == {"psnr", "ssim", "lowfreq_psnr"} for v in method.values())
    assert m["gflops"]["end_to_end"] > 0
    stats = json.loads((project / "results" / "stats.json").read_text())
    assert {(c["metric"], c["b"]) for c in stats["comparisons"]} == {
        (mt, b) for mt in ("psnr", "ssim", "lowfreq_psnr")
        for b in ("identity", "copy_input", "vqvae_roundtrip", "promptir_seed0", "promptir_seed1")}
    # restorevar - promptir across PromptIR's two seeds, overall and per degradation, from the within-seed tests
    across = {(c["metric"], c["group"]): c for c in stats["across_seeds"]}
    assert len(across) == 3 * 8 and {c["b"] for c in stats["across_seeds"]} == {"promptir"}
    psnr = across["psnr", "overall"]
    assert psnr["n_seeds"] == 2 and psnr["per_seed_diff"] == pytest.approx({str(k): next(
        c["weighted"]["mean_diff"] for c in stats["comparisons"] if c["metric"] == "psnr" and c["b"] == f"promptir_seed{k}")
        for k in (0, 1)})
    cost = json.loads((project / "metrics.json").read_text())["cost"]["promptir"]
    assert m["gflops"]["promptir"] > 0 and cost["params"] > 0 and cost["seconds_per_image"] > 0
    seeds = json.loads((project / "checkpoints" / "train_promptir.json").read_text())["seeds"]
    assert set(seeds) == {"0", "1"} and all(v["step"] == 8 for v in seeds.values())
    assert sorted(f.name for f in (project / "checkpoints" / "train_promptir").iterdir()) == ["seed0.pt", "seed1.pt"]
    assert "lpips" in stats["not_measured"]
    page = (project / "reports" / "report.html").read_text()
    assert "rgb-crop0-resize32" in page and "data:image/png;base64," in page and "unavailable" in page
    assert "Ablation: conditioning" in page and "Scale-space analysis" in page
    assert "RestoreVAR against PromptIR, retrained" in page and "promptir (end to end)" in page
    for stage in STAGES[1:5]:
        summary = json.loads((project / "checkpoints" / f"{stage}.json").read_text())
        assert summary["exported_variant"] == "main" and summary["metrics"]["step"] > 0


def test_bench_stage_times_both_paths_and_logs_to_mlflow(done):
    from mlflow.tracking import MlflowClient

    project = done["project"]
    b = json.loads((project / "results" / "bench.json").read_text())
    assert b["weights"].startswith("checkpoint") and b["image_size"] == 32 and set(b["inference"]) == {"b1", "b4"}
    assert b["agreement"]["fp32"]["tokens_identical"]  # the trained model: fast fp32 = plain tokens
    assert set(b["training"]) == {"transformer", "tokenizer"}
    c = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("bench").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.metrics["token_agreement.fp32"] == 1.0 and "speedup.b1.fp32" in runs[0].data.metrics
    assert [a.path for a in c.list_artifacts(runs[0].info.run_id)] == ["bench.json"]
    assert "Inference speed: plain vs fast path" in (project / "reports" / "report.md").read_text()


def test_every_ablation_variant_trains_and_is_evaluated_or_listed_as_not_run(done):
    from mlflow.tracking import MlflowClient

    project = done["project"]
    expected = {"conditioning": {"continuous", "discrete"}, "positions": {"rope2d", "ape"},
                "refiner": {"none", "hart_mlp", "lrt_no_last_block", "lrt"}, "decoder_losses": {"l1", "ssim"}}
    c = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    for family, variants in expected.items():  # every variant once per seed of ablations.tiny.seeds
        s = json.loads((project / "results" / "ablations" / family / "summary.json").read_text())
        assert set(s["variants"]) == variants and s["images"] == 14 and s["seeds"] == [0, 1, 2]
        assert all((project / "checkpoints" / "ablations" / family / f"seed{k}" / f"{v}.pt").exists()
                   for v in variants for k in (0, 1, 2))
        runs = c.search_runs([c.get_experiment_by_name(f"ablation/{family}").experiment_id])
        assert sorted((r.data.tags["variant"], r.data.tags["seed"]) for r in runs) == sorted(
            (v, k) for v in variants for k in ("0", "1", "2"))
        assert {r.data.tags["ablation_family"] for r in runs} == {family}
        assert all(r.info.status == "FINISHED" for r in runs)
        assert {(cmp["b"], cmp["seed"]) for cmp in s["comparisons"]} >= {
            (v, k) for v in variants - {s["reference"]} for k in (0, 1, 2)}
        across = [a for a in s["across_seeds"] if a["metric"] == "psnr" and a["b"] in variants]
        assert len(across) == len(variants) - 1 and all(a["n_seeds"] == 3 for a in across)
        for a in across:  # the across-seed effect is the mean of the within-seed ones
            within = [cmp["weighted"]["mean_diff"] for cmp in s["comparisons"]
                      if cmp["metric"] == "psnr" and cmp["b"] == a["b"]]
            assert a["mean_diff"] == pytest.approx(sum(within) / 3)
            assert a["verdict"] in ("supported", "contradicted", "inconclusive")
        m = json.loads((project / "results" / "ablations" / family / "metrics.json").read_text())
        assert all(m["rgb-crop0-resize32"][v]["psnr"]["seeds"] == 3 for v in variants)
    s = json.loads((project / "results" / "ablations" / "decoder_losses" / "summary.json").read_text())
    assert "perceptual" in s["not_run"] and "weights not cached" in s["not_run"]["perceptual"]
    assert s["init_from"] == ["the study's tokenizer (train_tokenizer)"]  # the report says what variants start from
    assert "starts from" in (project / "reports" / "report.md").read_text()
    curves = json.loads((project / "results" / "ablations" / "conditioning" / "curves.json").read_text())
    assert [r["step"] for r in curves["discrete"]["1"] if "val_acc" in r] == [2, 4]
    losses = [c.get_metric_history(r.info.run_id, "loss")[-1].value
              for r in c.search_runs([c.get_experiment_by_name("ablation/conditioning").experiment_id])
              if r.data.tags["variant"] == "discrete"]
    assert len(set(losses)) == 3  # the seed changes the training run
    # positions: pre-trained at 16 px (4 scales), then fine-tuned at 32 px (6 scales) from those weights
    s = json.loads((project / "results" / "ablations" / "positions" / "summary.json").read_text())
    assert s["pretrain"] == {"size": 16, "steps": 4, "patch_nums": "[1, 2, 3, 4]", "size_to": 32}
    pre = json.loads((project / "results" / "ablations" / "positions" / "pretrain_curves.json").read_text())
    for v in ("rope2d", "ape"):
        assert [r["step"] for r in pre[v]["0"] if "val_acc_scale_3" in r] == [2, 4]
        assert not any("val_acc_scale_4" in r for r in pre[v]["0"])  # the small size has 4 scales
        assert "val_acc_scale_5" in s["final"][v] and "pretrain_val_acc" in s["final"][v]
        ck = torch.load(project / "checkpoints" / "ablations" / "positions" / "seed1" / f"{v}.pt", weights_only=True)
        assert ck["config"]["vqvae"]["image_size"] == 32 and ck["config"]["transformer"]["positions"] == v
        assert ck["meta"]["train_config"]["init_from"].endswith("seed1/pretrain/last.pt")
        assert ck["meta"]["train_config"]["loop"]["seed"] == 1


def test_the_evaluation_run_holds_metrics_json_and_the_stats_and_every_run_its_inputs(done):
    from mlflow.tracking import MlflowClient

    from pipelines.mlflow_runs import sha256_short

    project = done["project"]
    c = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    [run] = c.search_runs([c.get_experiment_by_name("evaluation").experiment_id])
    m, prov = json.loads((project / "metrics.json").read_text())["rgb-crop0-resize32"], run.data.params
    expected = {f"{metric}/{method}/{'overall' if key == 'overall' else key.split('/')[0]}": v
                for method, entry in m.items() for key, values in entry.items() for metric, v in values.items()}
    logged = {k: v for k, v in run.data.metrics.items() if "_diff_vs_" not in k}
    assert logged == pytest.approx(expected) and "psnr/identity/synth-haze" in logged
    stats = json.loads((project / "results" / "stats.json").read_text())
    w = next(x for x in stats["comparisons"] if x["metric"] == "psnr" and x["b"] == "identity")["weighted"]
    assert run.data.metrics["psnr_diff_vs_identity/overall"] == pytest.approx(w["mean_diff"])
    assert run.data.metrics["psnr_diff_vs_identity/overall_ci_low"] == pytest.approx(w["ci"][0])
    assert run.data.metrics["psnr_diff_vs_identity/overall_p"] == pytest.approx(w["p_perm"])
    across = next(x for x in stats["across_seeds"] if x["metric"] == "psnr" and x["group"] == "overall")
    assert run.data.metrics["psnr_diff_vs_promptir_across_seeds/overall"] == pytest.approx(across["mean_diff"])
    assert run.data.metrics["psnr_diff_vs_promptir_across_seeds/overall_ci_low"] == pytest.approx(across["ci"][0])
    assert "psnr_diff_vs_promptir_across_seeds/synth-haze" in run.data.metrics
    assert prov["git_commit"] == done["commit"] and prov["protocol"] == "rgb-crop0-resize32"
    assert prov["checkpoint_sha256"] == sha256_short(project / "checkpoints" / "train_refiner.pt")
    assert prov["test_manifest_sha256"] == sha256_short(project / "data" / "prepared" / "test.json")
    assert prov["params_sha256"] == sha256_short(project / "params.yaml")
    assert {a.path for a in c.list_artifacts(run.info.run_id)} == {"report.html", "metrics.json", "stats.json"}
    training = c.search_runs([c.get_experiment_by_name("train_transformer").experiment_id])[0]
    assert training.data.tags["git_commit"] == done["commit"] and training.data.tags["study"] == run.data.tags["study"]
    assert training.data.tags["train_data_sha256"] == sha256_short(project / "data" / "prepared" / "train.json")
    for r in c.search_runs([c.get_experiment_by_name("ablation/refiner").experiment_id]):  # ranked by test PSNR
        v, k = r.data.tags["variant"], r.data.tags["seed"]
        seed_means = json.loads((project / "results" / "ablations" / "refiner" / "metrics.json").read_text())
        assert "test_psnr" in r.data.metrics and "test_ssim/synth-haze" in r.data.metrics
        assert r.data.metrics["test_psnr"] > 0 and k in ("0", "1", "2") and v in seed_means["rgb-crop0-resize32"]


def test_dvc_plots_render_every_declared_plot_offline(done, tmp_path):
    project = done["project"]
    declared = yaml.safe_load((project / "dvc.yaml").read_text())["plots"]
    r = subprocess.run([tool("dvc"), "plots", "show", "--json"], cwd=project, env=env(), capture_output=True,
                       text=True, check=False)
    shown = json.loads(r.stdout)
    assert r.returncode == 0 and not shown.get("errors"), r.stdout[-2000:] + r.stderr[-2000:]
    assert len(shown["data"]) == len(declared) == 11
    for plot_id, renders in shown["data"].items():
        [vega] = renders
        assert vega["content"]["data"]["values"], plot_id  # every plot has points
    r = subprocess.run([tool("dvc"), "plots", "show", "-o", str(tmp_path / "plots")], cwd=project, env=env(),
                       capture_output=True, text=True, check=False)
    page = (tmp_path / "plots" / "index.html").read_text()
    assert r.returncode == 0 and page.count("vegaEmbed(") >= len(declared)
    assert "cdn.jsdelivr" not in page and not re.search(r"<script[^>]+src=", page)  # nothing to fetch


def test_every_trial_is_a_finished_mlflow_run_with_metrics_and_artifacts(done):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{done['project'] / 'mlflow.db'}")
    for stage in STAGES[1:5]:
        exp = c.get_experiment_by_name(stage)
        runs = c.search_runs([exp.experiment_id])
        assert [r.info.status for r in runs] == ["FINISHED"], stage
        run = runs[0]
        assert run.data.params["model.preset"] == "tiny" and run.data.tags["profile"] == "tiny"
        history = c.get_metric_history(run.info.run_id, "loss") if stage != "finetune_decoder" else \
            c.get_metric_history(run.info.run_id, "l1")
        assert len(history) >= 2
        if stage == "train_transformer":  # the learning curves that show whether the model reads its input
            for name in ("health/tf_acc_scale_0", "health/copy_acc_scale_0", "health/cross_gain_0", "health/sos_gain",
                         "health/cond_swap_changed", "health/restored_psnr", "health/input_psnr",
                         "health/lowfreq_psnr_restored", "health/lowfreq_psnr_input"):
                points = c.get_metric_history(run.info.run_id, name)
                assert {p.step for p in points} >= {20, 40}, name  # both evaluations of the 40 steps
        # the run names its checkpoint and digest; the weights stay in the run folder (tracking.log_checkpoints
        # copies them into MLflow too)
        assert {a.path for a in c.list_artifacts(run.info.run_id)} == {"samples.png"}, stage
        ckpt = done["project"] / run.data.tags["checkpoint"]
        assert run.data.tags["checkpoint"].startswith("runs/") and ckpt.name == "last.pt"
        assert run.data.tags["checkpoint_sha256"] == sha256_short(ckpt)
        assert run.data.tags["ray_node"].startswith("127.0.0.1/"), run.data.tags  # one machine: loopback only
        # trials name the project's files relative to it: a node may mount the project elsewhere
        assert str(done["project"]) not in json.dumps(run.data.params), stage
        meta = torch.load(ckpt, map_location="cpu", weights_only=True)["meta"]
        assert str(done["project"]) not in json.dumps(meta) and meta["train_config"]["data"]["train_manifest"] == \
            "data/prepared/train.json", stage


def _dvc_cache_file(project: Path, out: str) -> Path:
    """Where DVC 3 keeps a file of an output (a file's own, or one inside a folder output): by its md5."""
    md5 = hashlib.md5((project / out).read_bytes()).hexdigest()
    return project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def test_each_checkpoint_is_stored_twice_not_six_times(done):
    """The trial's own file, and DVC's cache, which the exported checkpoint is a hard link to (`cache.type`
    in .dvc/config); no copies in Ray Tune's storage or MLflow's artifacts."""
    project = done["project"]
    assert not [f for d in ("ray_results", "mlartifacts") for f in (project / d).rglob("*.pt")]
    for out in ("checkpoints/train_transformer.pt", "checkpoints/ablations/refiner/seed0/lrt.pt"):
        assert os.path.samefile(project / out, _dvc_cache_file(project, out)), out
    summary = json.loads((project / "checkpoints" / "train_transformer.json").read_text())
    [run_dir] = (project / "runs").glob(f"train_transformer-tiny-*/{summary['exported_variant']}")
    assert (run_dir / "last.pt").read_bytes() == (project / "checkpoints" / "train_transformer.pt").read_bytes()




def _kill_tree(project: Path, proc: subprocess.Popen) -> None:
    import psutil

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for p in psutil.process_iter(["cwd"]):  # Ray's daemons may have left the process group
        try:
            if p.info["cwd"] and Path(p.info["cwd"]).is_relative_to(project):
                p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def _kill_after_a_checkpoint(project: Path, cmd: list[str], other_than: Path | None = None,
                             trials: str = "train_transformer-*/main/last.pt", at: int = 8, steps: int = 40) -> Path:
    """Start ``cmd``, SIGKILL it (and its Ray) once a trial folder (``trials``) other than ``other_than`` holds a
    checkpoint of step ``at`` or later, and return that checkpoint: a kill between two checkpoints of ``steps``."""
    from restorevar.checkpoint import load_checkpoint

    proc = subprocess.Popen(cmd, cwd=project, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline, ckpt = time.time() + 600, None
    while time.time() < deadline and ckpt is None:
        found = [p for p in (project / "runs").glob(trials) if p.parent != other_than]
        if found and load_checkpoint(found[0])["step"] >= at:
            ckpt = found[0]
        elif proc.poll() is not None:
            pytest.fail(f"{' '.join(cmd[-2:])} ended (rc {proc.returncode}) before a trial checkpointed")
        time.sleep(0.2)
    assert ckpt is not None, "the stage never wrote a checkpoint"
    _kill_tree(project, proc)
    assert load_checkpoint(ckpt)["step"] < steps, "killed too late to test resuming"
    return ckpt


def _lock_md5(project: Path, stage: str, out: str) -> str:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == out)


def test_sigkilled_stage_resumes_to_the_same_bytes_and_nothing_downstream_reruns(done):
    """The transformer stage of the finished study, run again from scratch and SIGKILLed between two
    checkpoints; a plain `dvc repro` resumes it from its last checkpoint to a byte-identical file, so DVC has
    nothing downstream to rerun and the study's results stand."""
    from mlflow.tracking import MlflowClient

    project = done["project"]
    before = _lock_md5(project, "train_transformer", "checkpoints/train_transformer.pt")
    # as if it had never run: no trial folder, no Tune experiment to restore, no entry in dvc.lock and no DVC
    # run cache (either would let DVC check the old file out of its cache instead of training)
    for d in [*(project / "runs").glob("train_transformer-*"), *(project / "ray_results").glob("train_transformer-*"),
              project / ".dvc" / "cache" / "runs"]:
        shutil.rmtree(d)
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    del lock["stages"]["train_transformer"]
    (project / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    _kill_after_a_checkpoint(project, [tool("dvc"), "repro", "track"])
    assert not (project / "checkpoints" / "train_transformer.pt").exists()  # DVC removed it before the run

    out = _repro(project)
    assert "resumed from step" in out, out[-3000:]
    assert _ran(out) == ["train_transformer"], out[-3000:]  # the same bytes: every downstream stage is up to date
    assert _lock_md5(project, "train_transformer", "checkpoints/train_transformer.pt") == before
    a, b = done["transformer"], _components(project / "checkpoints" / "train_transformer.pt")
    assert all(torch_equal(a[c][k], b[c][k]) for c in a for k in a[c])
    assert _metrics(project) == done["metrics"] and _per_image(project) == done["per_image"]

    c = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("train_transformer").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"], "the resumed trial reopens its own run"


def test_nothing_changed_means_no_work_and_a_params_change_reruns_only_downstream(done):
    project = done["project"]
    assert _ran(_repro(project)) == []
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["bench"]["tiny"]["repeats"] = 2  # read by the bench stage alone; its output feeds the report
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert _ran(_repro(project)) == ["bench", "report", "track"]


def test_the_promptir_stage_resumes_each_seed_after_sigkill_to_the_same_bytes(done):
    """The baseline's stage (a trial per seed, on the trial machinery of RestoreVAR's stages) run alone with a longer
    loop: once through, then from scratch and SIGKILLed after a checkpoint, then again: it resumes, and every
    seed's exported checkpoint is the uninterrupted run's, byte for byte."""
    project = done["project"]
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train_promptir"]["tiny"]["loop"].update(steps=160, ckpt_every=10, log_every=10, eval_every=160)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cmd = [tool("python"), "-m", "pipelines.train_promptir"]
    exported = project / "checkpoints" / "train_promptir"

    def run() -> str:
        r = subprocess.run(cmd, cwd=project, env=env(), capture_output=True, text=True, check=False, timeout=900)
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        return r.stdout + r.stderr

    run()
    whole = {f.name: f.read_bytes() for f in sorted(exported.glob("*.pt"))}
    assert list(whole) == ["seed0.pt", "seed1.pt"]
    for d in [*(project / "runs").glob("train_promptir-*"), *(project / "ray_results").glob("train_promptir-*")]:
        shutil.rmtree(d)
    _kill_after_a_checkpoint(project, cmd, trials="train_promptir-*/main/seed*/last.pt", at=10, steps=160)
    assert "resumed from step" in run()
    assert {f.name: f.read_bytes() for f in sorted(exported.glob("*.pt"))} == whole


def test_a_two_worker_trial_follows_the_one_process_trial_and_resumes_after_sigkill(done):
    """The transformer stage with `tune.workers: 2` (Ray Train, DDP on gloo, one CPU each) after the study: its
    losses equal the study's one-process trial with the same global batch, rank 0 alone writes one MLflow run
    and one checkpoint, and a SIGKILL between checkpoints resumes every rank. It runs the stage alone (what
    `dvc repro` runs for it), so the study downstream is not re-run; it comes last, as it replaces the
    exported transformer."""
    from mlflow.tracking import MlflowClient

    from pipelines.training_stage import history

    project = done["project"]
    one = next((project / "runs").glob("train_transformer-*/main"))  # the study's one-process trial
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train_transformer"]["tiny"]["tune"] = {"workers": 2}
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cmd = [tool("python"), "-m", "pipelines.train_transformer"]
    ckpt = _kill_after_a_checkpoint(project, cmd, other_than=one)

    r = subprocess.run(cmd, cwd=project, env=env(), capture_output=True, text=True, check=False, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "resumed from step" in out, out[-3000:]
    assert "(RayTrainWorker" in out  # the ranks ran as Ray Train workers
    two = ckpt.parent
    a, b = history(one), history(two)
    assert [x["step"] for x in a] == [x["step"] for x in b]
    assert [x["loss"] for x in a] == pytest.approx([x["loss"] for x in b], rel=1e-4)
    assert a[-1]["val_acc"] == pytest.approx(b[-1]["val_acc"], abs=1e-6)
    # one checkpoint series, rank 0's, and nothing in Ray's storage
    assert sorted(p.name for p in two.iterdir()) == ["history.jsonl", "last.pt", "mlflow_run_id"]
    assert not list((project / "ray_results").rglob("*.pt"))
    c = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("train_transformer").experiment_id],
                         "tags.ray_workers = '2'")
    assert [r.info.status for r in runs] == ["FINISHED"], "one run for the two ranks, reopened on resume"
    assert runs[0].data.tags["checkpoint"] == str(two.relative_to(project) / "last.pt")


def torch_equal(x, y) -> bool:
    import torch

    return torch.equal(x, y)


def test_ablation_params_expand_into_one_dvc_stage_per_family(tmp_path):
    project = copy_project(tmp_path, lambda raw: raw.update(ablation_families=["refiner", "conditioning"]) or
                           raw["ablations"]["tiny"]["families"].pop("decoder_losses"))
    r = subprocess.run([tool("dvc"), "stage", "list", "--name-only"], cwd=project, env=env(), capture_output=True,
                       text=True, check=True)
    names = r.stdout.split()
    assert [n for n in names if n.startswith("ablate@")] == ["ablate@refiner", "ablate@conditioning"]
    assert "scale_space" in names
