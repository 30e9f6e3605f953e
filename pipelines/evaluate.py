"""DVC stage `evaluate`: per-image metrics of the trained model and the baselines on the test split, the
cost of each component, and the summary metrics.json that DVC tracks.

Writes results/per_image/<method>.parquet, results/samples/ (PNG examples for the report),
results/evaluation.json (protocol, profile, metric availability) and results/cost.json.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from pipelines import tuning
from pipelines.params import ROOT, Params, checkpoint_path
from pipelines.params_schema import BASELINES, MODEL_METHOD
from pipelines.stage_main import stage_main
from restorevar.baselines.promptir import load_promptir
from restorevar.checkpoint import load_model
from restorevar.data.manifest import read_manifest
from restorevar.device import pick_device
from restorevar.errors import UserError
from restorevar.fileio import atomic_write
from restorevar.inference.engine import fast
from restorevar.metrics import MetricProtocol, MetricSuite, summary, write_rows
from restorevar.metrics.cost import measure_cost, measure_network_cost
from restorevar.metrics.results import read_results
from restorevar.metrics.scoring import (
    copy_input_method,
    evaluate,
    external_method,
    identity_method,
    model_method,
    network_method,
    roundtrip_method,
)
from restorevar.stats.seeds import seed_method

RESULTS = ROOT / "results"
PROMPTIR = checkpoint_path("train_promptir").with_suffix("")  # its seeds' checkpoints, seed<k>.pt


def _write_json(path: Path, obj) -> None:
    text = json.dumps(obj, indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def run() -> dict:
    started = time.perf_counter()
    p = Params()
    e = p.evaluate
    device = pick_device(e.device)
    model = load_model(checkpoint_path("train_refiner"), ["vqvae", "transformer", "refiner"]).to(device).eval()
    protocol = MetricProtocol(e.protocol.colour, e.protocol.crop_border, e.protocol.geometry,
                              model.cfg.vqvae.image_size, e.protocol.convention)
    protocol.validate()
    suite = MetricSuite(e.metrics, protocol, device)
    for name, (ok, reason) in suite.available.items():
        if not ok:
            print(f"evaluate: {name} {reason}")
    inference = fast(e.dtype)
    methods = {MODEL_METHOD: model_method(model, device, inference)}
    if "identity" in e.baselines:
        methods["identity"] = identity_method()
    if "copy_input" in e.baselines:  # the study's own decoder, as the model's tokens get
        methods["copy_input"] = copy_input_method(model.vqvae, device)
    if "vqvae_roundtrip" in e.baselines:
        tok = load_model(checkpoint_path("train_tokenizer"), ["vqvae"]).to(device).eval()
        methods["vqvae_roundtrip"] = roundtrip_method(tok.vqvae, device)
    baseline_nets = {}
    if "promptir" in e.baselines:  # one method per training seed: what follows is stated across seeds
        # only seed<k>.pt, the names train_promptir writes: another file there is not one of its seeds
        found = sorted((int(m[1]), f) for f in (PROMPTIR.glob("seed*.pt") if PROMPTIR.is_dir() else [])
                       if (m := re.fullmatch(r"seed(\d+)", f.stem)))
        if not found:
            raise UserError(f"{PROMPTIR.relative_to(ROOT)} holds no seed<k>.pt; run the train_promptir stage first "
                            "(dvc repro train_promptir) or drop promptir from evaluate's baselines")
        for seed, f in found:
            name = seed_method("promptir", seed)
            baseline_nets[name] = load_promptir(f).to(device)
            methods[name] = network_method(baseline_nets[name], device)
    entries = read_manifest(p.test_manifest)
    missing: dict[str, list[str]] = {}
    for name, folder in e.external.items():
        methods[name], missing[name] = external_method(ROOT / folder, entries, protocol)

    for old in ("per_image", "samples"):
        shutil.rmtree(RESULTS / old, ignore_errors=True)
    rows = evaluate(p.test_manifest, methods, suite, batch_size=e.batch_size,
                    max_per_stratum=e.max_images_per_degradation, samples_per_stratum=e.samples_per_degradation,
                    sample_dir=RESULTS / "samples")
    for name, r in rows.items():
        write_rows(RESULTS / "per_image" / f"{name}.parquet", r)
    eval_seconds = time.perf_counter() - started

    cost = measure_cost(model, e.cost.batch_size, e.cost.warmup, e.cost.repeats, options=inference)
    if baseline_nets:  # one seed's network: the seeds share their architecture and so their cost
        net = next(iter(baseline_nets.values()))
        cost["baselines"] = {"promptir": measure_network_cost(net, protocol.size, e.cost.batch_size, e.cost.warmup,
                                                              e.cost.repeats)}
    _write_json(RESULTS / "cost.json", cost)
    df = read_results(RESULTS / "per_image")
    sec = cost["seconds_per_image"]
    metrics = summary(df)
    metrics["cost"] = {"seconds_per_image": {k: round(v, 6) for k, v in sec.items()},
                       # ratios to the decoder's time travel between machines better than seconds
                       "ratio_to_decode": {k: round(v / sec["decode"], 4) for k, v in sec.items() if k != "decode"},
                       "gflops_per_image": {k: round(v / 1e9, 4) for k, v in cost["flops_per_image"].items()}}
    for name, c in cost.get("baselines", {}).items():  # beside the model's end to end, on the same images
        metrics["cost"][name] = {"seconds_per_image": round(c["seconds_per_image"]["end_to_end"], 6),
                                 "params": c["params"]["end_to_end"],
                                 "gflops_per_image": round(c["flops_per_image"]["end_to_end"] / 1e9, 4)}
    _write_json(ROOT / "metrics.json", metrics)
    _write_json(RESULTS / "plots" / "psnr_per_degradation.json", bar_records(metrics[protocol.id]))
    info = {
        "profile": p.profile, "preset": p.model.preset, "checkpoint": str(checkpoint_path("train_refiner").relative_to(ROOT)),
        "test_manifest": str(Path(p.test_manifest).relative_to(ROOT)), "protocol": protocol.describe(),
        "inference": asdict(inference),
        "metrics": {n: {"available": ok, "reason": reason} for n, (ok, reason) in suite.available.items()},
        "methods": list(methods), "baselines": [b for b in BASELINES if b in methods],
        "external": {n: {"folder": f, "unmatched": len(missing[n]), "unmatched_examples": missing[n][:5]}
                     for n, f in e.external.items()},
        "images": int(df[df.method == MODEL_METHOD].drop_duplicates(["dataset", "degradation", "image_id"]).shape[0]),
        "dataset_roles": dataset_roles(p, entries),
        "seconds": round(time.perf_counter() - started, 1), "evaluation_seconds": round(eval_seconds, 1),
        "torch": torch.__version__,
    }
    _write_json(RESULTS / "evaluation.json", info)
    _write_json(RESULTS / "health.json", test_health(model, p, device))
    return info


def bar_records(means: dict) -> list[dict]:
    """One record per (dataset, method) with its mean PSNR, for `dvc plots` (its bar template draws one
    series: each bar is labelled "dataset / method")."""
    out = []
    for method, entry in means.items():
        for key, values in entry.items():
            if "psnr" in values:
                dataset = key.split("/", 1)[0]
                out.append({"bar": f"{dataset} / {method}", "dataset": dataset, "method": method,
                            "psnr": values["psnr"]})
    return sorted(out, key=lambda r: (r["dataset"] != "overall", r["dataset"], r["method"]))


def dataset_roles(p: Params, test_entries) -> dict[str, str]:
    """'aior' for a test dataset the model also trained on (the paper's Table 1), 'generalization' for one it
    never saw in training (its Table 2: LHP, REVIDE, TOLED, POLED, CDD, LOLBlur; here also the synthetic mixes)."""
    trained = {e.dataset for e in read_manifest(p.train_manifest)}
    return {d: "aior" if d in trained else "generalization" for d in sorted({e.dataset for e in test_entries})}


def test_health(model, p: Params, device) -> dict:
    """Model health on the test split, per degradation and over all, for the report: it describes the model
    that was chosen, and chooses nothing."""
    from restorevar.analysis.health import model_health
    from restorevar.data.dataset import PairedDataset, PairedTransform
    from restorevar.data.manifest import CLASS_NAMES

    size = model.cfg.vqvae.image_size
    ds = PairedDataset(p.test_manifest, PairedTransform(crop=size, mode="test", test_protocol=p.evaluate.protocol.geometry))
    groups: dict[str, list[dict]] = {}
    for i in range(len(ds)):
        it = ds.item(i)
        groups.setdefault(it["dataset"], []).append(it)
    bs = p.evaluate.batch_size
    batches = {name: [{k: torch.stack([it[k] for it in items[j:j + bs]]) for k in ("degraded", "clean")}
                      for j in range(0, len(items), bs)] for name, items in sorted(groups.items())}
    out = {"overall": model_health(model, [b for bl in batches.values() for b in bl]),
           "per_dataset": {name: model_health(model, bl) for name, bl in batches.items() if sum(
               b["degraded"].shape[0] for b in bl) > 1},
           "degradation_names": {name: CLASS_NAMES[items[0]["degradation"]] for name, items in groups.items()}}
    return out


def _work() -> dict:
    p = Params()
    return tuning.run_task(run, what="evaluate", device=p.evaluate.device, address=p.ray_address, root=ROOT)


def _summary(info: dict) -> list[str]:
    m = json.loads((ROOT / "metrics.json").read_text())
    proto = info["protocol"]["id"]
    return [*(f"evaluate: {method:<16} " + "  ".join(f"{k} {v:.4f}" for k, v in sorted(entry["overall"].items()))
              for method, entry in m[proto].items()),
            f"evaluate: {info['images']} test images, protocol {proto}, {info['seconds']} s"]


def main() -> int:
    return stage_main("evaluate", _work, _summary)


if __name__ == "__main__":
    sys.exit(main())
