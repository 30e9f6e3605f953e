"""Assemble reports/report.md and reports/report.html from the results folder, and nothing else.

Inputs: results/per_image/*.parquet, results/evaluation.json (protocol, profile, metric availability),
results/cost.json, results/stats.json and results/samples/. Every table states its protocol and profile.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from restorevar.errors import UserError
from restorevar.fileio import atomic_write
from restorevar.metrics.iqa import FULL_REFERENCE, HIGHER_IS_BETTER, NO_REFERENCE
from restorevar.metrics.results import read_results
from restorevar.report import figures
from restorevar.report.ablations import ablation_sections, scale_space_section
from restorevar.report.baselines import baseline_section
from restorevar.report.document import Document
from restorevar.report.health_section import health_section
from restorevar.report.speed import speed_section
from restorevar.stats.compare import comparison_table, format_table, holm

WEIGHTED_METHOD = (
    "Dataset-weighted test (as the paper's Table 8): the statistic is the mean over strata of each stratum's "
    "mean paired difference, so every dataset (and each degradation of the synthetic benchmark) counts "
    "equally whatever its number of images. Its {conf:.0%} interval is a stratified bootstrap ({n_boot} "
    "resamples of images within each stratum, percentile method); its p-value is a stratified sign-flip "
    "permutation test ({n_perm} random sign patterns, or all of them when there are at most 16 images), "
    "two-sided. Per-stratum and pooled rows use the paired t-test (t interval), a BCa bootstrap interval of "
    "the mean difference and the Wilcoxon signed-rank test; d_z is the mean difference over the SD of the "
    "differences. Holm's correction runs over the rows of each table.")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing; run `dvc repro` (evaluate and stats stages) first") from None


def _fmt(v: float, digits: int = 3) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def quality_table(df: pd.DataFrame, metric: str, methods: list[str]) -> pd.DataFrame:
    """Rows: methods; columns: each dataset/degradation and the dataset-weighted average (paper Table 1)."""
    d = df[df.metric == metric]
    means = d.groupby(["method", "dataset", "degradation"])["value"].mean().reset_index()
    means["group"] = means.dataset + "/" + means.degradation
    wide = means.pivot(index="method", columns="group", values="value")
    wide["average"] = wide.mean(axis=1)
    wide = wide.reindex([m for m in methods if m in wide.index])
    digits = 2 if metric in ("psnr", "musiq") else 4
    out = wide.map(lambda v: _fmt(v, digits)).reset_index().rename(columns={"method": "method"})
    return out


def cost_table(cost: dict[str, Any]) -> pd.DataFrame:
    """RestoreVAR's components and end to end, then each retrained baseline end to end (same images, device)."""
    rows = []
    parts = [(comp, cost) for comp in ("encode", "transformer", "refiner", "decode", "end_to_end")]
    parts += [(f"{name} (end to end)", {k: {f"{name} (end to end)": v["end_to_end"]} for k, v in c.items()
                                        if k in ("seconds_per_image", "params", "flops_per_image")})
              for name, c in cost.get("baselines", {}).items()]
    for comp, c in parts:
        rows.append({"component": comp, "seconds / image": f"{c['seconds_per_image'][comp]:.4f}",
                     "params (M)": f"{c['params'][comp] / 1e6:.3f}",
                     "GFLOPs / image": f"{c['flops_per_image'][comp] / 1e9:.3f}"})
    return pd.DataFrame(rows)


def stats_summary(stats: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for c in stats["comparisons"]:
        w, p = c["weighted"], c["pooled"]
        rows.append({"metric": c["metric"], "comparison": f"{c['a']} − {c['b']}", "n": w["n"],
                     "better": "higher" if HIGHER_IS_BETTER[c["metric"]] else "lower",
                     "weighted mean diff": w["mean_diff"], "95% CI (stratified bootstrap)": tuple(w["ci"]),
                     "p (sign-flip)": w["p_perm"], "pooled p (t)": p["p_t"], "pooled p (Wilcoxon)": p["p_wilcoxon"]})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["p (sign-flip), Holm"] = holm(list(df["p (sign-flip)"]))
    df["weighted mean diff"] = [_fmt(v, 4) for v in df["weighted mean diff"]]
    df["95% CI (stratified bootstrap)"] = [f"[{lo:.4f}, {hi:.4f}]" for lo, hi in df["95% CI (stratified bootstrap)"]]
    for col in ("p (sign-flip)", "pooled p (t)", "pooled p (Wilcoxon)", "p (sign-flip), Holm"):
        df[col] = ["—" if not math.isfinite(v) else f"{v:.3g}" for v in df[col]]
    return df


def build_report(results: Path, out_dir: Path, title: str = "RestoreVAR suite report", grid_per_group: int = 2,
                 seed: int = 0) -> dict[str, Path]:
    results, out_dir = Path(results), Path(out_dir)
    info = _read_json(results / "evaluation.json")
    cost = _read_json(results / "cost.json")
    stats = _read_json(results / "stats.json")
    df = read_results(results / "per_image")
    proto = info["protocol"]
    df = df[df.protocol == proto["id"]]
    methods = list(info["methods"])
    model_method = stats["method"]
    fig_dir = out_dir / "figures"
    stamp = f"profile `{info['profile']}` (preset `{info['preset']}`), protocol `{proto['id']}`"

    doc = Document(title)
    doc.meta({"profile": f"`{info['profile']}` (model preset `{info['preset']}`)",
              "checkpoint": f"`{info['checkpoint']}`", "test split": f"`{info['test_manifest']}`, "
              f"{info['images']} images",
              "protocol": f"`{proto['id']}`: PSNR/SSIM on {proto['psnr_ssim']}; test images {proto['geometry']} to "
              f"{proto['size']} px; LPIPS {proto['lpips']}; SSIM {proto['ssim']}; values in {proto['range']}",
              "methods": ", ".join(f"`{m}`" for m in methods),
              "metrics": "; ".join(f"{m}: {v['reason']}" for m, v in info["metrics"].items())})
    doc.text("`identity` is the degraded input itself; `copy_input` is the degraded image's own tokens decoded by "
             "the study's decoder, what a model that only copies its input would score; `vqvae_roundtrip` is the "
             "clean image encoded to tokens by the tokenizer and decoded again, the upper bound of token prediction "
             "the paper discusses; `promptir_seed<k>` is PromptIR as the study retrained it, seed k. "
             "Every number below is computed from the per-image rows in `results/per_image/`.", note=True)

    # Table 1: the degradations trained on; Table 2: datasets seen only at test time (older results say nothing)
    generalization = {d for d, r in info.get("dataset_roles", {}).items() if r == "generalization"}
    tables = [("Restoration quality (paper Table 1)", df[~df.dataset.isin(generalization)], FULL_REFERENCE,
               "the degradations trained on")]
    if generalization:
        tables.append(("Generalization: datasets never trained on (paper Table 2)", df[df.dataset.isin(generalization)],
                       NO_REFERENCE + FULL_REFERENCE, ("test-only datasets; the paper reports the no-reference "
                       "metrics, the full-reference ones are shown where a clean target exists")))
    else:
        tables.append(("No-reference quality (paper Table 2)", df, NO_REFERENCE, "every test dataset"))
    for heading, part, names, what in tables:
        names = [m for m in names if m in info["metrics"]]
        if part.empty or not names:
            continue
        doc.heading(heading, 3 if heading.startswith("No-reference") else 2)
        for metric in names:
            avail = info["metrics"][metric]
            if not avail["available"]:
                doc.text(f"{metric.upper()}: {avail['reason']}.")
                continue
            if metric not in set(part.metric):
                continue
            arrow = "higher is better" if HIGHER_IS_BETTER[metric] else "lower is better"
            doc.table(quality_table(part, metric, methods),
                      f"{metric.upper()} ({arrow}), mean per dataset/degradation over {what}; {stamp}. "
                      "'average' weights every column equally.")
    for metric in ("psnr", "ssim"):
        if metric in set(df.metric):
            doc.figure(figures.metric_bars(df, metric, methods, fig_dir / f"bars_{metric}.png",
                                           stats.get("confidence", 0.95), seed),
                       f"{metric.upper()} per degradation with {stats.get('confidence', 0.95):.0%} CIs; {stamp}")

    doc.heading("Paired statistics (paper Tables 7 and 8)")
    doc.text(WEIGHTED_METHOD.format(conf=stats["confidence"], n_boot=max(stats["n_boot"], 1000),
                                    n_perm=stats["n_perm"]), note=True)
    summary = stats_summary(stats)
    if not summary.empty:
        doc.table(summary, f"{model_method} against each baseline, dataset-weighted; Holm over this table's rows; {stamp}")
    for m, why in stats.get("not_measured", {}).items():
        doc.text(f"{m.upper()}: {why}.", note=True)
    for c in stats["comparisons"]:
        t = format_table(comparison_table(c)).rename(columns={"mean A": f"mean {c['a']}", "mean B": f"mean {c['b']}"})
        doc.table(t, f"{c['metric'].upper()}: {c['a']} − {c['b']} per image; {stamp}")
    for b in stats["against"][:2]:
        if "psnr" in set(df.metric):
            doc.figure(figures.paired_differences(df, model_method, b, "psnr", fig_dir / f"diff_psnr_{b}.png"),
                       f"Per-image PSNR differences, {model_method} − {b}; {stamp}")

    doc.heading("Cost (paper Tables 5, 6 and 10)")
    doc.table(cost_table(cost), f"Per image at {cost['image_size']} px, batch {cost['batch_size']}, median of "
              f"{cost['repeats']} runs after {cost['warmup']} warm-up ({cost['timer']}); device: {cost['device']}; "
              f"torch {cost['torch']}; FLOPs counted by torch's FlopCounterMode (matmuls, attention, convolutions; not element-wise ops)")

    baseline_section(doc, stats, info, cost, stamp)
    health_section(doc, results)
    speed_section(doc, results)
    ablation_sections(doc, results, fig_dir)
    scale_space_section(doc, results, fig_dir)

    doc.heading("Examples")
    grid = figures.image_grid(results / "samples", methods, fig_dir / "grid.png", grid_per_group)
    if grid:
        doc.figure(grid, f"Input, each method and target for {grid_per_group} test images per degradation; {stamp}")
    else:
        doc.text("No sample images were saved (evaluate.samples_per_degradation is 0).")
    doc.text("Metrics are computed with pyiqa, whose recent releases are licensed for non-commercial use only.",
             note=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    md, page = doc.to_markdown(out_dir), doc.to_html()
    atomic_write(out_dir / "report.md", lambda tmp: Path(tmp).write_text(md))
    atomic_write(out_dir / "report.html", lambda tmp: Path(tmp).write_text(page))
    return {"markdown": out_dir / "report.md", "html": out_dir / "report.html", "figures": fig_dir}
