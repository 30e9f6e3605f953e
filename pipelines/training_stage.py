"""Run one training stage: every variant as a Ray Tune trial logged to MLflow, then export the chosen
checkpoint to the fixed path DVC tracks (``checkpoints/<stage>.pt``) with its metrics beside it.

A trial is a typed ``TrialSpec`` built once on the driver from params.yaml. It crosses Ray as the plain dict
``to_ray`` makes (Tune stores it in its experiment state, so a killed stage is restored from it) and
``from_ray`` reads back, refusing a key it does not know; the trainer config inside is parsed into its
dataclass once, on the side that trains (``train_config``)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines import mlflow_runs, tuning
from pipelines.params import ROOT, Params, checkpoint_path
from pipelines.params_schema import train_config_class
from pipelines.stage_main import stage_main
from restorevar.config import from_dict
from restorevar.errors import UserError
from restorevar.fileio import atomic_write, publish_copy
from restorevar.train.common import CKPT_NAME, LoopConfig

TRAINERS = {
    "pretrain_tokenizer": "restorevar.train.tokenizer:train_tokenizer",
    "pretrain_prior": "restorevar.train.prior:train_prior",
    "pretrain_restoration": "restorevar.train.transformer:train_transformer",
    "train_tokenizer": "restorevar.train.tokenizer:train_tokenizer",
    "finetune_decoder": "restorevar.train.decoder:train_decoder",
    "train_transformer": "restorevar.train.transformer:train_transformer",
    "train_refiner": "restorevar.train.refiner:train_refiner",
    "train_promptir": "restorevar.train.promptir:train_promptir",
}


# ------------------------------------------------------------------------------------------------
# The trial: built once on the driver, crosses Ray as one plain dict (to_ray), read back by from_ray
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialSpec:
    stage: str  # the training stage whose trainer runs (an ablation family's runs its stage's)
    profile: str
    variant: str
    family: str  # the ablation family, or the stage's own name
    replicate: bool  # one of several seeds of the variant: its run folder and MLflow name carry the seed
    config: dict[str, Any]  # the trainer config as plain data, its paths relative to the project
    run_dir: str  # relative to the project: runs/<experiment>/<variant>[/seed<k>]
    root: str  # the driver's project folder (a node's own is RESTOREVAR_ROOT)
    mlflow_uri: str
    experiment_id: str
    pretrain: dict[str, Any] | None = None  # the same trial first trained at another size, then fine-tuned
    log_checkpoint: bool = False  # also copy the checkpoint into MLflow's artifacts
    workers: int = 1  # Ray Train workers sharing each batch (data parallel) when above 1
    provenance: dict[str, str] = field(default_factory=dict)  # git commit, params and data digests, as tags

    @property
    def seed(self) -> int:
        return int(self.config.get("loop", {}).get("seed", 0))

    @property
    def run_name(self) -> str:
        """The MLflow run's name: stage/variant, and /seed<k> for a replicate."""
        return f"{self.stage}/{self.variant}" + (f"/seed{self.seed}" if self.replicate else "")

    @property
    def described(self) -> str:
        """The trial in a message: its variant, and its seed when it is one of several."""
        return self.variant + (f" (seed {self.seed})" if self.replicate else "")

    def to_ray(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_ray(cls, data: dict[str, Any]) -> TrialSpec:
        return from_dict(cls, data, where="trial")

    def train_config(self) -> Any:
        """The trainer's typed config (``TransformerTrainConfig`` for train_transformer, ...)."""
        return from_dict(train_config_class(self.stage), self.config)

    def pretrain_config(self) -> Any:
        return from_dict(train_config_class(self.stage), self.pretrain) if self.pretrain else None


# ------------------------------------------------------------------------------------------------
# What Ray runs for one trial, and the stage around the trials
# ------------------------------------------------------------------------------------------------
def _trainer(stage: str):
    import importlib

    mod, fn = TRAINERS[stage].split(":")
    return getattr(importlib.import_module(mod), fn)


def trainable(config: dict[str, Any]) -> None:
    """What Ray runs for one trial: train (the trainer resumes from the run folder's last.pt) with reporting
    to Tune + MLflow, then log the samples and the checkpoint's path and digest (the file itself only with
    ``tracking.log_checkpoints``: a copy of every trial's weights). In a data-parallel trial this runs on each
    Ray Train worker: rank 0 does all of that, the others train their share of each batch."""
    t = TrialSpec.from_ray(config["trial"])
    os.chdir(os.environ.get("RESTOREVAR_ROOT") or t.root)  # the trial's paths are relative to the project
    run_dir = Path(t.run_dir)
    data_parallel = t.workers > 1  # then this is one of the trial's Ray Train workers
    rank = tuning.rank(data_parallel)
    if data_parallel:  # what ran where, in the stage's log
        print(f"{t.stage}/{t.variant}: rank {rank} of {t.workers} on node {tuning.node()}", flush=True)
    if rank:  # ranks but 0 train their share and report to Train's barrier only
        def silent(history: Path, prefix: str = ""):
            return lambda step, metrics, checkpoint=None: tuning.report({}, True)

        _train(t, run_dir, silent)
        return
    run = mlflow_runs.TrialRun(t.mlflow_uri, t.experiment_id, t.run_name, run_dir / "mlflow_run_id",
                            tags={"stage": t.stage, "variant": t.variant, "profile": t.profile,
                                  "ablation_family": t.family, "seed": str(t.seed),
                                  "config_sha256": _hash(t.config), "ray_node": tuning.node(),
                                  **({"ray_workers": str(t.workers)} if data_parallel else {}),
                                  **t.provenance})
    ok = False
    try:
        run.log_params(t.config)

        def reporter(history: Path, prefix: str = ""):
            def report(step: int, metrics: dict[str, float], checkpoint: Path | None = None) -> None:
                named = {prefix + k: v for k, v in metrics.items()}
                run.log_metrics(named, step)
                with history.open("a") as f:  # every report, for the ablations' curves (a resume appends)
                    f.write(json.dumps({"step": step, **metrics}) + "\n")
                tuning.report({**named, "step": step}, data_parallel)
            return report

        if t.pretrain:
            run.log_params({"pretrain": t.pretrain})
        config = _train(t, run_dir, reporter)
        if t.pretrain:
            run.log_params({"init_from": config.init_from})
        ckpt = run_dir / CKPT_NAME
        try:
            from restorevar.train.samples import sample_grid

            run.log_image(sample_grid(ckpt, config.data.train_manifest, crop=config.data.crop), "samples.png")
        except Exception as e:  # noqa: BLE001 - a failed picture must not fail the training run
            run.set_tags({"samples_error": str(e)[:200]})
        run.set_tags({"checkpoint": _relative(ckpt), "checkpoint_sha256": mlflow_runs.sha256_short(ckpt)})
        if t.log_checkpoint:
            run.log_artifact(ckpt, "checkpoint")
        ok = True
    finally:
        run.end(ok)


def _train(t: TrialSpec, run_dir: Path, reporter: Callable[..., Any]) -> Any:
    """The trial's training: with ``pretrain``, first at another size, then fine-tuned from it (each resumes
    from its own last.pt); returns the typed config the last part trained with."""
    config = t.train_config()
    if t.pretrain:
        pre_dir = run_dir / "pretrain"  # the trainer creates it (and run_dir) before its first report
        _trainer(t.stage)(t.pretrain_config(), pre_dir, reporter(run_dir / "pretrain_history.jsonl", "pretrain_"))
        config = dataclasses.replace(config, init_from=str(pre_dir / CKPT_NAME), any_resolution=True)
    _trainer(t.stage)(config, run_dir, reporter(run_dir / "history.jsonl"))
    return config


def history(run_dir: Path, name: str = "history.jsonl") -> list[dict]:
    """The trial's reports, one per step (a resumed trial re-reports steps: the last one counts)."""
    path = run_dir / name
    rows: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows[r["step"]] = {**rows.get(r["step"], {}), **r}
    return [rows[s] for s in sorted(rows)]


# the validation metrics each stage's DVC plot draws (results/curves/<stage>_val.json)
VAL_CURVES = {"train_tokenizer": ["val_psnr_continuous", "val_psnr_discrete"],
              "finetune_decoder": ["val_psnr_continuous"], "train_transformer": ["val_acc"],
              "train_refiner": ["val_psnr_refined", "val_psnr_unrefined"], "train_promptir": ["val_psnr", "val_psnr_input"]}


def write_curves(stage: str, run_dir: Path, loop: dict[str, Any], out_dir: Path) -> None:
    """The exported trial's training loss and validation metrics, as the lists of records `dvc plots` reads:
    <stage>.json (step, loss) and <stage>_val.json (step and the stage's validation metrics). A report
    carries the latest values of every metric, so only the steps that logged (``loop.log_every``) or
    evaluated (``loop.eval_every``) are kept, and the last."""
    rows = history(run_dir)
    last = rows[-1]["step"] if rows else 0
    log_every, eval_every = loop.get("log_every", LoopConfig.log_every), loop.get("eval_every", LoopConfig.eval_every)
    train = [{"step": r["step"], "loss": r["loss"]} for r in rows
             if "loss" in r and (r["step"] % log_every == 0 or r["step"] == last)]
    keys = VAL_CURVES.get(stage, [])
    val = [{"step": r["step"], **{k: r[k] for k in keys}} for r in rows
           if all(k in r for k in keys) and (r["step"] % eval_every == 0 or r["step"] == last)]
    for name, records in ((f"{stage}.json", train), (f"{stage}_val.json", val)):
        text = json.dumps(records, indent=0) + "\n"
        atomic_write(out_dir / name, lambda tmp, text=text: Path(tmp).write_text(text))


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def _train_data(config: dict[str, Any]) -> str:
    """The file a training run reads its pairs from: the manifest, or the photographs' corpus ("shipped":
    the package's own)."""
    data = config.get("data", {})
    path = data.get("train_manifest", "") if data.get("pairs", "manifest") == "manifest" else data.get("photos", "")
    return path if path == "shipped" else _relative(path)


def _relative(path: str | Path) -> str:
    """A path inside the project as relative to it (runs on another machine share the names), else as given."""
    return str(Path(path).relative_to(ROOT)) if Path(path).is_absolute() and Path(path).is_relative_to(ROOT) else str(path)


def _rooted(obj: Any) -> Any:
    """``obj`` (a trial's config: dicts, lists, strings) with every absolute path inside the project made
    relative to it. A trial resolves them against its node's project folder (``RESTOREVAR_ROOT``, else the
    driver's), so a node may mount the shared project elsewhere, and what a trial records (its MLflow params,
    its checkpoint's config) does not depend on where the project lies."""
    if isinstance(obj, dict):
        return {k: _rooted(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rooted(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("/"):
        return _relative(obj)
    return obj


UPSTREAM_KEYS = ("tokenizer_checkpoint", "decoder_checkpoint", "transformer_checkpoint", "init_from")


def upstream_digests(configs: list[dict[str, Any]]) -> dict[str, str]:
    """SHA-256 (short) of every upstream checkpoint file the configs name, by path."""
    paths = {c[k] for c in configs for k in UPSTREAM_KEYS if isinstance(c.get(k), str) and Path(c[k]).is_file()}
    return {path: mlflow_runs.sha256_short(Path(path)) for path in sorted(paths)}


def with_seed(config: dict[str, Any], seed: int) -> dict[str, Any]:
    return {**config, "loop": {**config.get("loop", {}), "seed": seed}}


def run_trials(p: Params, stage: str, variants: dict[str, dict[str, Any]], tune: Any, experiment: str,
               family: str, pretrain: dict[str, dict[str, Any]] | None = None,
               seeds: list[int] | None = None) -> list[dict[str, Any]]:
    """Every variant of ``stage`` as a Ray Tune trial logged to the MLflow ``experiment``; raises if one fails.

    ``pretrain`` (variant -> config) trains each variant first at another size, then fine-tunes from it.
    ``seeds`` makes one trial per variant and seed (its ``loop.seed``, in the pre-training too), each in
    runs/<experiment>/<variant>/seed<k>/ and tagged with its seed; without it, each variant trains once
    with its own config's seed.
    """
    keys = [(v, None) for v in variants] if seeds is None else [(v, k) for v in variants for k in seeds]
    configs = {(v, k): (variants[v] if k is None else with_seed(variants[v], k)) for v, k in keys}
    pre = {(v, k): (pretrain[v] if k is None else with_seed(pretrain[v], k)) for v, k in keys} if pretrain else {}
    ident = [[v, k, configs[v, k], pre.get((v, k))] for v, k in keys]
    # the upstream checkpoints' contents belong to the experiment too: with only the config in its name, a
    # retrained transformer would leave the refiner's finished experiment to be restored, trained on the old one
    upstream = upstream_digests(list(configs.values()))
    # data-parallel trials train (and resume) apart from one-process ones; one process keeps the names it had
    key = [variants if pretrain is None and seeds is None else ident, upstream] + (
        [{"workers": tune.workers}] if tune.workers > 1 else [])
    name = f"{experiment.replace('/', '-')}-{p.profile}-{_hash(key)}"
    exp_id = mlflow_runs.ensure_experiment(p.mlflow_uri, experiment, ROOT / "mlartifacts")
    # on the driver, once: git and hashing stay out of the trials
    prov = {data: {**mlflow_runs.provenance(ROOT, p.path, **({"train_data": ROOT / data} if data != "shipped" else {})),
                   "train_data": data}
            for data in {_train_data(c) for c in configs.values()}}
    trials = [TrialSpec(stage=stage, profile=p.profile, variant=v, family=family, replicate=k is not None,
                        config=_rooted(configs[v, k]), pretrain=_rooted(pre.get((v, k))),
                        run_dir=str(Path("runs", name, v, "" if k is None else f"seed{k}")), root=str(ROOT),
                        mlflow_uri=p.mlflow_uri, experiment_id=exp_id, log_checkpoint=p.tracking.log_checkpoints,
                        workers=tune.workers, provenance=prov[_train_data(configs[v, k])])
              for v, k in keys]
    tuning.init(p.ray_address)
    resources = tune.trial_resources()
    tuning.check_resources(f"{stage}.tune" + (f" (each of {tune.workers} workers)" if tune.workers > 1 else ""),
                           resources, "lower it in params.yaml or add nodes that have it")
    results = tuning.run(name=name, trainable=trainable, trials=[t.to_ray() for t in trials], resources=resources,
                         storage=p.ray_storage, max_failures=tune.max_failures, workers=tune.workers,
                         run_name=lambda trial: TrialSpec.from_ray(trial).run_dir.strip("/").replace("/", "-"))
    results = [{**r, "trial": TrialSpec.from_ray(r["trial"])} for r in results]
    failed = [r for r in results if r["error"]]
    if failed:
        raise UserError(f"{experiment}: trial {failed[0]['trial'].described} failed: {failed[0]['error']}")
    return results


def run_stage(stage: str, family: str | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    p = Params()
    sp = p.stages[stage]
    for upstream in ("tokenizer_checkpoint", "decoder_checkpoint", "transformer_checkpoint"):
        path = sp.config_dict.get(upstream)
        if path and not Path(path).exists():
            raise UserError(f"{stage} needs {path}; run the stage that makes it first (dvc repro)")
    results = run_trials(p, stage, sp.variants, sp.tune, experiment=stage, family=family or stage,
                         seeds=list(sp.tune.seeds) or None)
    if sp.tune.seeds:
        return _export_seeds(p, stage, results, started)
    if sp.tune.chosen:
        best = next(r for r in results if r["trial"].variant == sp.tune.chosen)
    elif sp.tune.metric:
        scored = [r for r in results if sp.tune.metric in r["metrics"]]
        if not scored:
            raise UserError(f"{stage}: no trial reported the metric '{sp.tune.metric}'")
        best = (max if sp.tune.mode == "max" else min)(scored, key=lambda r: r["metrics"][sp.tune.metric])
    else:
        best = results[0]
    src = ROOT / best["trial"].run_dir / CKPT_NAME
    dst = checkpoint_path(stage)
    publish_copy(src, dst)
    if stage in VAL_CURVES:  # the study's stages (dvc.yaml declares their curves), not the pretraining tier's
        write_curves(stage, src.parent, sp.variants[best["trial"].variant].get("loop", {}),
                     ROOT / "results" / "curves")
    summary = {
        "stage": stage, "profile": p.profile, "exported_variant": best["trial"].variant,
        "metrics": {k: v for k, v in best["metrics"].items() if isinstance(v, (int, float)) and not k.startswith(
            ("time_", "timestamp", "pid", "training_iteration", "done"))},
        "trials": {r["trial"].variant: {k: r["metrics"].get(k) for k in ("step", sp.tune.metric) if k}
                   for r in results},
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(summary, indent=1, sort_keys=True) + "\n"
    atomic_write(dst.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))
    print(f"{stage}: exported {best['trial'].variant} to {dst.relative_to(ROOT)} in {summary['seconds']} s")
    return summary


def _export_seeds(p: Params, stage: str, results: list[dict[str, Any]], started: float) -> dict[str, Any]:
    """A stage trained once per seed (``tune.seeds``): every seed's checkpoint is exported, as
    checkpoints/<stage>/seed<k>.pt, and the first seed's curves; the summary holds each seed's metrics."""
    out = checkpoint_path(stage).with_suffix("")
    by_seed = {r["trial"].seed: r for r in results}
    for old in out.glob("seed*.pt") if out.is_dir() else []:  # a seed no longer listed would be read as current
        if old.stem not in {f"seed{k}" for k in by_seed}:
            old.unlink()
    for k, r in sorted(by_seed.items()):
        publish_copy(ROOT / r["trial"].run_dir / CKPT_NAME, out / f"seed{k}.pt")
    first = by_seed[min(by_seed)]
    write_curves(stage, ROOT / first["trial"].run_dir, first["trial"].config.get("loop", {}), ROOT / "results" / "curves")
    summary = {
        "stage": stage, "profile": p.profile, "exported_variant": first["trial"].variant,
        "seeds": {str(k): {m: v for m, v in r["metrics"].items() if isinstance(v, (int, float)) and m.startswith(
            ("val_", "loss", "step"))} for k, r in sorted(by_seed.items())},
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(summary, indent=1, sort_keys=True) + "\n"
    atomic_write(out.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))
    print(f"{stage}: exported seeds {', '.join(map(str, sorted(by_seed)))} to {out.relative_to(ROOT)}/ in "
          f"{summary['seconds']} s")
    return summary


def main(stage: str) -> int:
    os.chdir(ROOT)
    return stage_main(stage, lambda: run_stage(stage))
