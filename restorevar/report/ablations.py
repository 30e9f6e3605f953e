"""The report's "Ablations" and "Scale-space analysis" sections, from results/ablations/ and
results/scale_space/. Whether our run agrees with the paper is decided from the numbers, across training
seeds: a direction counts only when the across-seed interval excludes zero. The per-image tests within
each seed are shown too, with how often they would have claimed a difference."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from restorevar.fileio import atomic_write
from restorevar.metrics.iqa import HIGHER_IS_BETTER
from restorevar.metrics.results import read_results
from restorevar.report import figures
from restorevar.report.document import Document
from restorevar.stats.compare import holm
from restorevar.stats.paired import paired_test

CURVE_METRIC = {"train_transformer": "val_acc", "train_refiner": "val_psnr_refined",
                "finetune_decoder": "val_psnr_continuous"}
ALPHA = 0.05



def _interval(c: dict) -> str:
    """``[lo, hi]``, or why there is none (seeds that agree exactly measured no spread)."""
    lo, hi = c["ci"]
    return f"[{lo:+.3f}, {hi:+.3f}]" if math.isfinite(lo) else f"({c['method']})"

def _f(v: float, d: int = 3) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.{d}f}"


def _means(frames: dict[str, pd.DataFrame], methods: list[str]) -> pd.DataFrame:
    """Each method's mean over test images (strata weighted equally), averaged over the seeds, with the
    between-seed SD of PSNR where there are several seeds."""
    overall = {}
    for k, df in frames.items():
        per = df.groupby(["method", "dataset", "degradation", "metric"])["value"].mean()
        overall[k] = per.groupby(level=["method", "metric"]).mean().unstack("metric")
    stacked = pd.concat(overall, names=["seed"])
    mean = stacked.groupby(level="method").mean()
    mean = mean.reindex([m for m in methods if m in mean.index])
    out = pd.DataFrame({"method": mean.index})
    for metric in mean.columns:
        out[metric.upper()] = [_f(v, 2 if metric == "psnr" else 4) for v in mean[metric]]
    if len(frames) > 1 and "psnr" in stacked.columns:
        sd = stacked["psnr"].groupby(level="method").std(ddof=1)
        out["PSNR between-seed SD"] = [_f(sd.get(m, float("nan")), 3) for m in mean.index]
    return out


def _within_seed(summary: dict[str, Any], metric: str) -> tuple[int, int, int]:
    """How many within-seed comparisons between variants the per-image test calls significant (Holm within
    each seed) for and against the paper's choice, of how many: the certainty one training run would claim."""
    better = HIGHER_IS_BETTER[metric]
    pro = con = total = 0
    for k in summary["seeds"]:
        comps = [c for c in summary["comparisons"]
                 if c["seed"] == k and c["metric"] == metric and c["b"] in summary["variants"]]
        for c, p in zip(comps, holm([c["weighted"]["p_perm"] for c in comps])):
            if p < ALPHA:
                good = (c["weighted"]["mean_diff"] > 0) == better
                pro, con = pro + good, con + (not good)
        total += len(comps)
    return pro, con, total


def verdict(summary: dict[str, Any], metric: str = "psnr") -> str:
    """One sentence: do this run's seeds support the paper's choice on ``metric``?"""
    ref, choice = summary["reference"], summary["paper_choice"]
    if ref != choice:
        why = summary["not_run"].get(choice, "not run")
        return (f"The paper's choice `{choice}` could not be run here ({why}), so its claim is not tested; "
                f"the comparisons use `{ref}` as the reference.")
    comps = [c for c in summary["across_seeds"] if c["metric"] == metric and c["b"] in summary["variants"]]
    if not comps:
        return f"No {metric.upper()} comparisons between variants: fewer than two variants ran."
    k = len(summary["seeds"])
    pro, con, total = _within_seed(summary, metric)
    within = (f" Within single seeds, the per-image sign-flip test (Holm, below {ALPHA}) calls {pro + con} of {total} "
              f"comparisons significant ({pro} for the paper's choice, {con} against): that certainty is about "
              "these test images and one training run each, not about the method.")
    head = f"Paper: {summary['claim'] or 'the paper prefers `' + choice + '`'}."
    if k < 2:
        return (f"{head} Each variant was trained with one seed, so there is no across-seed interval and the "
                f"claim is not tested here (set `ablations.seeds` to two or more seeds)." + within)
    verdicts = [c["verdict"] for c in comps]
    word = ("contradicts" if "contradicted" in verdicts else
            "supports" if all(v == "supported" for v in verdicts) else "is inconclusive about")
    parts = [f"`{choice}` − `{c['b']}` = {c['mean_diff']:+.3f} {_interval(c)}, "
             f"between-seed SD {c['between_seed_sd']:.3f}: {c['verdict']}" for c in comps]
    level = comps[0]["confidence"]
    return (f"{head} On {metric.upper()}, over {k} training seeds, our run {word} this claim: " + "; ".join(parts)
            + f" (t interval over the {k} per-seed dataset-weighted differences, {k - 1} df, at {level:.2%}"
            + (f", Bonferroni over these {len(comps)} comparisons" if len(comps) > 1 else "")
            + "; a direction is called only when the interval excludes zero)." + within)


def seed_table(summary: dict[str, Any]) -> pd.DataFrame:
    """The across-seed effects: per-seed differences, their mean, between-seed SD, interval and verdict."""
    rows = []
    for c in summary["across_seeds"]:
        rows.append({"metric": c["metric"], "comparison": f"{c['a']} − {c['b']}",
                     "per seed": ", ".join(f"{v:+.4f}" for v in c["per_seed_diff"].values()),
                     "mean": _f(c["mean_diff"], 4), "between-seed SD": _f(c["between_seed_sd"], 4),
                     "interval": "—" if not math.isfinite(c["ci"][0]) else f"[{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]",
                     "level": f"{c['confidence']:.2%}", "p (t)": _f(c["p"], 4), "verdict": c["verdict"]})
    return pd.DataFrame(rows)


def identical_to_reference(df: pd.DataFrame, reference: str, variants: list[str]) -> list[str]:
    """Variants whose per-image values equal the reference's everywhere (a comparison with no information)."""
    key = ["dataset", "degradation", "image_id", "metric"]
    ref = df[df.method == reference].set_index(key)["value"].sort_index()
    out = []
    for v in variants:
        other = df[df.method == v].set_index(key)["value"].sort_index()
        if v != reference and len(ref) and ref.index.equals(other.index) and (ref.to_numpy() == other.to_numpy()).all():
            out.append(v)
    return out


def ablation_sections(doc: Document, results: Path, fig_dir: Path) -> None:
    root = results / "ablations"
    summaries = sorted(root.glob("*/summary.json"))
    if not summaries:
        return
    doc.heading("Ablations")
    doc.text("Reduced runs: every variant of a family trains with the same (small) number of steps on the "
             "shared upstream checkpoints, so variants compare with each other, not with the main model. "
             "Transformer variants are evaluated without a refiner (the refiner is trained per transformer); "
             "decoder variants by reconstructing the clean test images from their continuous latents.", note=True)
    for path in summaries:
        s = json.loads(path.read_text())
        fam = s["family"]
        doc.heading(f"Ablation: {fam}", 3)
        steps = sorted(set(s["steps"].values()))
        meta = {"profile": f"`{s['profile']}`", "trains": f"`{s['stage']}` for {', '.join(map(str, steps))} steps "
                "per variant and seed", "seeds": ", ".join(map(str, s["seeds"])), "test images": str(s["images"]), "protocol": f"`{s['protocol']['id']}`",
                "paper's choice": f"`{s['paper_choice']}`"}
        if s.get("init_from"):  # every variant of a family starts from the same weights
            meta["starts from"] = " / ".join(s["init_from"])
        pre = s.get("pretrain")
        if pre:
            meta["trains"] = (f"`{s['stage']}` for {pre['steps']} steps at {pre['size']} px (scales {pre['patch_nums']}), "
                              f"then fine-tuned from those weights for {', '.join(map(str, steps))} steps at "
                              f"{pre['size_to']} px, per variant and seed")
        doc.meta(meta)
        for v, why in s["not_run"].items():
            doc.text(f"Variant `{v}` not run: {why}.", note=True)
        frames = {str(k): read_results(path.parent / "per_image" / f"seed{k}") for k in s["seeds"]}
        table = _means(frames, s["methods"])
        key = CURVE_METRIC.get(s["stage"])
        if key:
            if pre:
                table[f"final {key} at {pre['size']} px"] = [
                    _f(s["final"].get(m, {}).get(f"pretrain_{key}", float("nan")), 4) for m in table.method]
            table[f"final {key}"] = [_f(s["final"].get(m, {}).get(key, float("nan")), 4) for m in table.method]
        doc.table(table, f"{fam}: mean over test images (every dataset/degradation weighted equally), averaged over "
                  f"{len(frames)} training seed(s); profile `{s['profile']}`, protocol `{s['protocol']['id']}`")
        if s["across_seeds"] and len(s["seeds"]) > 1:
            doc.table(seed_table(s), f"{fam}: the reference `{s['reference']}` against each variant across "
                      f"training seeds {', '.join(map(str, s['seeds']))}: a t interval over the per-seed "
                      "dataset-weighted differences; its width includes the seed-to-seed variance")
        if s["comparisons"]:
            rows = []
            for c in s["comparisons"]:
                w, p = c["weighted"], c["pooled"]
                rows.append({"seed": c["seed"], "metric": c["metric"], "comparison": f"{c['a']} − {c['b']}",
                             "n": w["n"], "weighted diff": w["mean_diff"], "95% CI": w["ci"],
                             "p (sign-flip)": w["p_perm"], "p (t)": p["p_t"], "p (Wilcoxon)": p["p_wilcoxon"]})
            t = pd.DataFrame(rows)
            t["p (sign-flip), Holm"] = holm(list(t["p (sign-flip)"]))
            t["weighted diff"] = [_f(v, 4) for v in t["weighted diff"]]
            t["95% CI"] = [f"[{lo:.4f}, {hi:.4f}]" for lo, hi in t["95% CI"]]
            for col in ("p (sign-flip)", "p (t)", "p (Wilcoxon)", "p (sign-flip), Holm"):
                t[col] = [_f(v, 4) if v >= 1e-3 else f"{v:.2g}" for v in t[col]]
            doc.table(t, f"{fam}: within each seed, the reference `{s['reference']}` against each variant, paired "
                      f"per image (the test images are the only randomness here); Holm over this table; "
                      f"profile `{s['profile']}`")
        doc.text(verdict(s))
        same = sorted(set.intersection(*(set(identical_to_reference(f, s["reference"], s["variants"]))
                                          for f in frames.values())))
        if same:
            doc.text(f"`{s['reference']}` and {', '.join(f'`{v}`' for v in same)} restore every test image identically "
                     "(the same value for every image and metric): at this budget they predict the same tokens, so "
                     "this run cannot separate them.", note=True)
        base = [c for c in s["across_seeds"] if c["metric"] == "psnr" and c["b"] == "tokenizer_discrete"]
        if base:  # the paper's "decoder fine-tuning helps": against the original discrete decoding
            c = base[0]
            spread = (f", between-seed SD {c['between_seed_sd']:.3f}, across-seed interval {_interval(c)}: "
                      f"{c['verdict']}" if c["n_seeds"] > 1 else " (one seed)")
            doc.text(f"Against the original discrete decoding, `{c['a']}` reconstructs with {c['mean_diff']:+.3f} "
                     f"dB PSNR over {c['n_seeds']} seed(s){spread}.")
        # variant -> seed -> rows; the figure draws each variant's mean over seeds with a band of one SD
        curves = {v: [r for rows_ in by_seed.values() for r in rows_]
                  for v, by_seed in json.loads((path.parent / "curves.json").read_text()).items()}
        if key and any(key in r for rows_ in curves.values() for r in rows_):
            f = figures.curves(curves, key, fig_dir / f"ablation_{fam}.png",
                               f"{fam}: validation {key} over training (profile {s['profile']})")
            doc.figure(f, f"{fam}: validation {key} (held out of the training manifest) over the same steps"
                       + (f" of the fine-tuning at {pre['size_to']} px" if pre else ""))


def scale_space_section(doc: Document, results: Path, fig_dir: Path) -> None:
    path = results / "scale_space" / "summary.json"
    if not path.exists():
        return
    s = json.loads(path.read_text())
    df = pd.read_parquet(results / "scale_space" / "per_image.parquet")
    doc.heading("Scale-space analysis (paper Fig. 2, 9 and 13)")
    doc.text(f"The tokenizer decodes the clean image's {s['scales']}-scale token pyramid with its coarse scales "
             f"{s['coarse'][0]}–{s['coarse'][-1]} or its fine scales {s['fine'][0]}–{s['fine'][-1]} taken from the "
             "other image: the degraded input, then the model's restored tokens. PSNR to the clean image and to the "
             "other image, mean [95% t-interval] over test images.")
    for pair in ("degraded", "restored"):
        rows, diffs = [], []
        sub = df[df.pair == pair]
        for (ds, deg), g in sub.groupby(["dataset", "degradation"], sort=True):
            row = {"dataset/degradation": f"{ds}/{deg}", "n": g.image_id.nunique()}
            for swap in ("coarse_from_other", "fine_from_other"):
                for col, label in (("psnr_to_clean", "to clean"), ("psnr_to_other", f"to {pair}")):
                    v = g[g.swap == swap][col].to_numpy()
                    row[f"{swap.split('_')[0]} from {pair}: {label}"] = _f(v.mean(), 2)
            fine = g[g.swap == "fine_from_other"].sort_values("image_id").psnr_to_clean.to_numpy()
            coarse = g[g.swap == "coarse_from_other"].sort_values("image_id").psnr_to_clean.to_numpy()
            r = paired_test(fine, coarse)
            diffs.append(r)
            row["fine − coarse, to clean"] = f"{r.mean_diff:+.2f} [{_f(r.ci_t[0], 2)}, {_f(r.ci_t[1], 2)}]"
            rows.append(row)
        adj = holm([r.p_t for r in diffs])
        for row, p in zip(rows, adj):
            row["p (t), Holm"] = _f(p, 4) if p >= 1e-3 else f"{p:.2g}"
        doc.table(pd.DataFrame(rows), f"Scale swaps with the {pair} pyramid; profile `{s['profile']}`, "
                  f"split at scale {s['split']}")
        if pair == "degraded":
            held = sum(1 for r, p in zip(diffs, adj) if r.mean_diff > 0 and p < ALPHA)
            doc.text(f"Paper: degradations live in the coarse scales, so taking the coarse scales from the degraded "
                     f"image moves the decoding further from the clean image than taking the fine scales does. Our "
                     f"run supports this on {held} of {len(diffs)} degradations (fine − coarse PSNR to clean "
                     f"> 0, Holm p < {ALPHA}).")
    grid = results / "scale_space" / "grid.png"
    if grid.exists():  # copied beside the report so the Markdown's relative link works
        fig_dir.mkdir(parents=True, exist_ok=True)
        dst = fig_dir / "scale_space_grid.png"
        atomic_write(dst, lambda tmp: shutil.copyfile(grid, tmp))
        doc.figure(dst, "Columns: " + ", ".join(s["grid_columns"]) + "; one test image per degradation")
