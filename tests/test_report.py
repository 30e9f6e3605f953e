"""The report from a small real results folder: tables with protocol and profile, figures, self-contained HTML."""
from __future__ import annotations

import json
import re

import pytest
import torch

from conftest import make_tiny
from restorevar.data.synth import SynthConfig, synth
from restorevar.metrics import MetricProtocol, MetricSuite, read_results, write_rows
from restorevar.metrics.cost import measure_cost
from restorevar.metrics.scoring import evaluate, identity_method, model_method
from restorevar.report import build_report
from restorevar.stats.compare import compare_methods


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    synth(root / "data", SynthConfig(size=32, train_per_degradation=1, test_per_degradation=3), progress=False)
    model = make_tiny(gains=0.5)
    protocol = MetricProtocol("rgb", 0, "resize", 32)
    suite = MetricSuite(["psnr", "ssim", "lpips"], protocol, weights_cache=root / "no-weights")
    methods = {"restorevar": model_method(model, torch.device("cpu")), "identity": identity_method()}
    res = root / "results"
    rows = evaluate(root / "data" / "test.json", methods, suite, batch_size=8, samples_per_stratum=1,
                    sample_dir=res / "samples", progress=False)
    for name, r in rows.items():
        write_rows(res / "per_image" / f"{name}.parquet", r)
    info = {"profile": "tiny", "preset": "tiny", "checkpoint": "checkpoints/train_refiner.pt",
            "test_manifest": "data/test.json", "protocol": protocol.describe(),
            "metrics": {n: {"available": ok, "reason": why} for n, (ok, why) in suite.available.items()},
            "methods": list(methods), "images": 21}
    (res / "evaluation.json").write_text(json.dumps(info))
    (res / "cost.json").write_text(json.dumps(measure_cost(model, 1, 1, 2)))
    df = read_results(res / "per_image")
    comps = [compare_methods(df, "restorevar", "identity", m, n_boot=200, n_perm=500) for m in ("psnr", "ssim")]
    (res / "stats.json").write_text(json.dumps({"method": "restorevar", "against": ["identity"], "confidence": 0.95,
                                                "n_boot": 200, "n_perm": 500, "comparisons": comps,
                                                "not_measured": {"lpips": "not measured"}}))
    out = build_report(res, root / "reports", "Test report", grid_per_group=1)
    return root, out


def test_html_is_self_contained_and_states_protocol_and_profile(results):
    _root, out = results
    page = out["html"].read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must not fetch anything"
    assert "<script" not in page and "<link" not in page
    assert page.count("data:image/png;base64,") == 4  # PSNR and SSIM bars, paired differences, example grid
    assert "profile `tiny`" not in page and "profile <code>tiny</code>" in page
    assert "rgb-crop0-resize32" in page
    assert "LPIPS: unavailable: weights not cached" in page


def test_markdown_tables_match_the_per_image_means(results):
    root, out = results
    md = out["markdown"].read_text()
    df = read_results(root / "results" / "per_image")
    mean = df[(df.method == "identity") & (df.metric == "psnr") & (df.degradation == "haze")]["value"].mean()
    row = next(line for line in md.splitlines() if line.startswith("| identity ") and "." in line)
    assert f"{mean:.2f}" in row  # first table is PSNR: the identity row holds the haze mean
    for fig in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (out["markdown"].parent / fig).exists()
    assert "all (dataset-weighted)" in md and "Holm" in md and "seconds / image" in md


def test_identical_variants_are_detected_only_when_every_value_matches():
    import pandas as pd

    from restorevar.report.ablations import identical_to_reference

    rows = [{"method": m, "dataset": "d", "degradation": "g", "image_id": str(i), "metric": "psnr", "value": v}
            for m, vals in {"a": [1.0, 2.0], "b": [1.0, 2.0], "c": [1.0, 2.5]}.items() for i, v in enumerate(vals)]
    df = pd.DataFrame(rows)
    assert identical_to_reference(df, "a", ["a", "b", "c"]) == ["b"]
    assert identical_to_reference(df[df.image_id == "0"], "c", ["a", "b"]) == ["a", "b"]


def test_test_only_datasets_go_to_the_generalization_table(results, tmp_path):
    import shutil

    root, _ = results
    res = tmp_path / "results"
    shutil.copytree(root / "results", res)
    info = json.loads((res / "evaluation.json").read_text())
    df = read_results(res / "per_image")
    test_only = {"synth-cdd", "synth-lolblur"}
    assert test_only <= set(df.dataset)
    info["dataset_roles"] = {d: "generalization" if d in test_only else "aior" for d in set(df.dataset)}
    (res / "evaluation.json").write_text(json.dumps(info))
    md = build_report(res, tmp_path / "reports", "Test report", grid_per_group=1)["markdown"].read_text()
    t1 = md[md.index("## Restoration quality (paper Table 1)"):md.index("## Generalization")]
    t2 = md[md.index("## Generalization: datasets never trained on (paper Table 2)"):]
    t2 = t2[:t2.index("\n## ", 4)]
    assert "synth-haze" in t1 and not any(d in t1 for d in test_only)
    assert all(d in t2 for d in test_only) and "synth-haze" not in t2


def _summary(per_seed: dict[str, float], within_p: float):
    from restorevar.stats.seeds import seed_interval, seed_verdict

    r = seed_interval(per_seed, 10, 0.95)
    seeds = [int(k) for k in per_seed]
    return {"reference": "lrt", "paper_choice": "lrt", "claim": "the LRT helps", "variants": ["none", "lrt"],
            "not_run": {}, "seeds": seeds,
            "comparisons": [{"seed": k, "metric": "psnr", "a": "lrt", "b": "none",
                             "weighted": {"mean_diff": v, "p_perm": within_p}} for k, v in zip(seeds, per_seed.values())],
            "across_seeds": [{"metric": "psnr", "a": "lrt", "b": "none", "verdict": seed_verdict(r, True), **r.to_dict()}]}


def test_the_ablation_verdict_rests_on_the_seeds_and_says_what_single_seeds_would_claim():
    from restorevar.report.ablations import verdict

    text = verdict(_summary({"0": 0.9, "1": -0.7}, within_p=0.0001))
    assert "over 2 training seeds, our run is inconclusive about this claim" in text
    assert "calls 2 of 2 comparisons significant (1 for the paper's choice, 1 against)" in text
    assert "between-seed SD 1.131" in text
    assert "supports this claim" in verdict(_summary({"0": 2.0, "1": 2.1, "2": 1.9}, within_p=0.0001))
    assert "contradicts this claim" in verdict(_summary({"0": -2.0, "1": -2.1, "2": -1.9}, within_p=0.0001))
    one = verdict(_summary({"0": 2.0}, within_p=0.0001))
    assert "one seed, so there is no across-seed interval" in one and "calls 1 of 1" in one
