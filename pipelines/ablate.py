"""DVC stage `ablate@<family>`: one ablation family of params.yaml, run and evaluated.

Every variant trains once per seed of ``ablations.seeds``, each a Ray Tune trial (MLflow experiment
``ablation/<family>``, tagged with the family, the variant and the seed) on the shared upstream
checkpoints; variants whose weights are missing are listed as not run, with the reason. Seed k's
checkpoints go to checkpoints/ablations/<family>/seed<k>/<variant>.pt and its per-image test results to
results/ablations/<family>/per_image/seed<k>/; the training curves to curves.json. summary.json holds the
paired per-image comparisons of every variant against the paper's choice within each seed, and their
effect across seeds (a t interval over the per-seed differences, whose width is the training-run noise);
metrics.json each variant's mean with its between-seed SD.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pipelines import mlflow_runs, tuning
from pipelines.params import ROOT, Params, checkpoint_path
from pipelines.stage_main import stage_main
from pipelines.training_stage import history, run_trials
from restorevar.checkpoint import load_checkpoint, load_components, load_model
from restorevar.device import pick_device
from restorevar.errors import UserError
from restorevar.fileio import atomic_write, publish_copy
from restorevar.metrics import MetricProtocol, MetricSuite, read_results, write_rows
from restorevar.metrics.results import summary as summarize
from restorevar.metrics.scoring import evaluate, model_method, reconstruction_method
from restorevar.models.presets import ModelRef
from restorevar.stats.compare import compare_methods
from restorevar.stats.seeds import across_seed_comparisons, seed_means
from restorevar.train.common import CKPT_NAME


def _write_json(path: Path, obj) -> None:
    text = json.dumps(obj, indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _pretrain_summary(cfg: dict, size_to: int) -> dict:
    vqvae = ModelRef(**cfg["model"]).build_config().vqvae
    return {"size": vqvae.image_size, "steps": cfg["loop"]["steps"], "patch_nums": str(list(vqvae.patch_nums)),
            "size_to": size_to}


def _log_test_scores(uri: str, results: list[dict], frames: dict[int, Any], protocol: str) -> None:
    """Each trial's MLflow run gets its own test scores (``test_<metric>``: dataset-weighted over all strata;
    ``test_<metric>/<dataset>``), so the UI ranks the variants as the report does."""
    for r in results:
        v, k = r["trial"].variant, r["trial"].seed
        entry = summarize(frames[k][frames[k].method == v])[protocol][v]
        names = mlflow_runs.stratum_names([key for key in entry if key != "overall"])
        scores = {(f"test_{metric}" if key == "overall" else f"test_{metric}/{names[key]}"): val
                  for key, values in entry.items() for metric, val in values.items()}
        run_id = (ROOT / r["trial"].run_dir / "mlflow_run_id").read_text().strip()
        mlflow_runs.log_metrics_to(uri, run_id, scores)


def _methods(stage: str, checkpoints: dict[str, Path], device: torch.device) -> dict:
    """How each variant restores a test image, by the stage the family ablates."""
    methods = {}
    if stage == "finetune_decoder":  # reconstruction of the clean image from its continuous latent
        tok = load_model(checkpoint_path("train_tokenizer"), ["vqvae"]).to(device).eval()
        methods["tokenizer_discrete"] = reconstruction_method(tok.vqvae, device, continuous=False)
        methods["tokenizer_continuous"] = reconstruction_method(tok.vqvae, device, continuous=True)
        for v, path in checkpoints.items():
            methods[v] = reconstruction_method(load_model(path, ["vqvae"]).to(device).eval().vqvae, device)
    elif stage == "train_transformer":  # no refiner (it is trained per transformer): decode f_hat directly
        for v, path in checkpoints.items():
            m = load_model(path, ["transformer"], refiner_none=True)
            load_components(m, load_checkpoint(checkpoint_path("finetune_decoder")), ["vqvae"],
                            checkpoint_path("finetune_decoder"))
            methods[v] = model_method(m.to(device).eval(), device)
    else:  # train_refiner: the exported checkpoint is the whole model
        for v, path in checkpoints.items():
            methods[v] = model_method(load_model(path, ["vqvae", "transformer", "refiner"]).to(device).eval(), device)
    return methods


# what a family's variants start from when the stage has no init_from of its own
STARTS = {"finetune_decoder": "the study's tokenizer (train_tokenizer)",
          "train_refiner": "a fresh refiner on the study's transformer (train_transformer)"}


def _starts_from(stage: str, configs: list[dict]) -> list[str]:
    if stage in STARTS:
        return [STARTS[stage]]
    return sorted({_init_name(c.get("init_from", "")) for c in configs})


def _init_name(init_from: str) -> str:
    """What a variant starts from, in words that hold on any machine (a path is named relative to the project)."""
    if not init_from:
        return "a fresh initialisation"
    if init_from in ("pretrained", "pretrained_restoration", "var_d16"):
        return {"pretrained": "the shipped prior (what reads the condition fresh)",
                "pretrained_restoration": "the shipped conditional restoration pretraining",
                "var_d16": "VAR's published d16"}[init_from]
    path = Path(init_from)
    return f"`{path.relative_to(ROOT) if path.is_absolute() and path.is_relative_to(ROOT) else path}`"


def run(family: str) -> dict:
    started = time.perf_counter()
    p = Params()
    if family not in p.ablations.families:
        raise UserError(f"unknown ablation family {family!r}; params.yaml defines: {', '.join(p.ablations.families)}")
    fam = p.ablations.families[family]
    configs = p.ablation_variants[family]
    suite_names = [m for m in p.evaluate.metrics if m in ("psnr", "ssim", "lpips")]
    out_dir, ck_dir = ROOT / "results" / "ablations" / family, ROOT / "checkpoints" / "ablations" / family
    for d in (out_dir, ck_dir):
        shutil.rmtree(d, ignore_errors=True)

    probe = MetricSuite([], MetricProtocol(size=1))  # only for the weight checks
    not_run, to_run = {}, {}
    for v, spec in fam.variants.items():
        missing = [(n, probe._check_weights(n)) for n in spec.needs]
        missing = [(n, why) for n, (ok, why) in missing if not ok]
        if missing:
            not_run[v] = f"needs {missing[0][0]}: {missing[0][1]}"
        else:
            to_run[v] = configs[v]
    for v, why in not_run.items():
        print(f"ablate {family}: variant {v} not run ({why})")
    if not to_run:
        raise UserError(f"ablation family {family}: no variant can run here; see the reasons above")

    pretrain = p.ablation_pretrain[family]
    pretrain = {v: pretrain[v] for v in to_run} if pretrain else None
    seeds = list(p.ablations.seeds)
    results = run_trials(p, fam.stage, to_run, p.stages[fam.stage].tune, experiment=f"ablation/{family}",
                         family=family, pretrain=pretrain, seeds=seeds)
    checkpoints: dict[int, dict[str, Path]] = {k: {} for k in seeds}
    curves: dict[str, dict[str, list]] = {v: {} for v in to_run}
    pre_curves: dict[str, dict[str, list]] = {v: {} for v in to_run}
    finals: dict[int, dict[str, dict]] = {k: {} for k in seeds}
    for r in results:
        v, run_dir, k = r["trial"].variant, ROOT / r["trial"].run_dir, r["trial"].seed
        dst = ck_dir / f"seed{k}" / f"{v}.pt"
        publish_copy(run_dir / CKPT_NAME, dst)
        checkpoints[k][v] = dst
        curves[v][str(k)] = history(run_dir)
        finals[k][v] = {key: val for key, val in r["metrics"].items() if key.startswith("val") or key == "step"}
        if pretrain:
            pre_curves[v][str(k)] = history(run_dir, "pretrain_history.jsonl")
            last = pre_curves[v][str(k)][-1] if pre_curves[v][str(k)] else {}
            finals[k][v].update({f"pretrain_{key}": val for key, val in last.items() if key.startswith("val")})
    _write_json(out_dir / "curves.json", curves)
    if pretrain:
        _write_json(out_dir / "pretrain_curves.json", pre_curves)

    size = load_model(checkpoint_path("train_tokenizer"), ["vqvae"]).cfg.vqvae.image_size
    pe = p.evaluate.protocol
    protocol = MetricProtocol(pe.colour, pe.crop_border, pe.geometry, size, pe.convention)

    def test_scores():  # a Ray task on a node with the device evaluate.device asks for
        device = pick_device(p.evaluate.device)
        suite = MetricSuite(suite_names, protocol, device)
        frames, methods = {}, []
        for k in seeds:  # every seed's variants on the same test images: the within-seed tests pair them
            rows = evaluate(p.test_manifest, _methods(fam.stage, checkpoints[k], device), suite,
                            batch_size=p.evaluate.batch_size, max_per_stratum=p.evaluate.max_images_per_degradation)
            for name, r in rows.items():
                write_rows(out_dir / "per_image" / f"seed{k}" / f"{name}.parquet", r)
            frames[k] = read_results(out_dir / "per_image" / f"seed{k}")
            methods = list(rows)
        return frames, methods, suite.computed, suite.available

    frames, methods, computed, available = tuning.run_task(test_scores, what=f"ablate {family}",
                                                           device=p.evaluate.device, address=p.ray_address, root=ROOT)
    _log_test_scores(p.mlflow_uri, results, frames, protocol.id)
    df = frames[seeds[0]]

    trained = list(to_run)
    reference = fam.paper_choice if fam.paper_choice in trained else trained[-1]
    s = p.stats
    comparisons = [{**compare_methods(frames[k], reference, v, metric, None, s.confidence, s.n_boot, s.n_perm, s.seed),
                    "seed": k}
                   for k in seeds for metric in computed for v in methods if v != reference]
    summary = {
        "family": family, "stage": fam.stage, "profile": p.profile, "paper_choice": fam.paper_choice,
        "reference": reference, "claim": fam.claim, "steps": {v: c["loop"]["steps"] for v, c in to_run.items()},
        "init_from": _starts_from(fam.stage, list(to_run.values())),
        "pretrain": _pretrain_summary(next(iter(pretrain.values())), size) if pretrain else None,
        "seeds": seeds, "variants": trained, "not_run": not_run, "methods": methods,
        "protocol": protocol.describe(),
        "metrics": {n: {"available": ok, "reason": why} for n, (ok, why) in available.items()},
        "images": int(df.drop_duplicates(["dataset", "degradation", "image_id"]).shape[0]),
        "final": {v: _mean_over_seeds([finals[k][v] for k in seeds]) for v in trained},
        "final_per_seed": {str(k): finals[k] for k in seeds},
        "comparisons": comparisons,
        "across_seeds": across_seed_comparisons(comparisons, trained, s.confidence),
        "seconds": round(time.perf_counter() - started, 1),
    }
    _write_json(out_dir / "summary.json", summary)
    _write_json(out_dir / "metrics.json", seed_means(frames))
    return summary


def _mean_over_seeds(rows: list[dict]) -> dict:
    keys = set.intersection(*(set(r) for r in rows)) if rows else set()
    return {key: sum(r[key] for r in rows) / len(rows) for key in sorted(keys)}


def summary_lines(family: str, s: dict) -> list[str]:
    """The stage's one-line results: each comparison across the seeds, or with one seed, within it."""
    def across(c: dict) -> str:
        return (f"ablate {family}: {c['metric']:<5} {c['a']} - {c['b']}: {c['mean_diff']:+.4f} over {c['n_seeds']} "
                f"seed(s) [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}], between-seed SD {c['between_seed_sd']:.4f}: "
                f"{c['verdict']}")

    def within(c: dict) -> str:  # one training run: no spread to measure, only the test images' interval
        w = c["weighted"]
        return (f"ablate {family}: {c['metric']:<5} {c['a']} - {c['b']}: {w['mean_diff']:+.4f} on seed {c['seed']} "
                f"alone, per-image interval [{w['ci'][0]:+.4f}, {w['ci'][1]:+.4f}] (one seed: no claim is tested "
                "across seeds)")

    one = len(s["seeds"]) < 2
    return [*(within(c) if one else across(c) for c in (s["comparisons"] if one else s["across_seeds"])),
            (f"ablate {family}: {len(s['variants'])} variant(s) x {len(s['seeds'])} seed(s) trained and "
             f"evaluated on {s['images']} test images, {len(s['not_run'])} not run, {s['seconds']} s")]


def main(family: str) -> int:
    return stage_main(f"ablate {family}", lambda: run(family), lambda s: summary_lines(family, s))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m pipelines.ablate <family>", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
