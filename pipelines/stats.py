"""DVC stage `stats`: paired comparisons of the model against every baseline and external method, on every
metric that was measured, and against a trained baseline across its training seeds. Writes results/stats.json."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pipelines.params import ROOT, Params
from pipelines.stage_main import stage_main
from restorevar.errors import UserError
from restorevar.fileio import atomic_write
from restorevar.metrics.results import read_results
from restorevar.stats.compare import compare_methods
from restorevar.stats.seeds import SEEDED, against_seeded

OUT = ROOT / "results" / "stats.json"


def run() -> dict:
    started = time.perf_counter()
    p = Params()
    s = p.stats
    df = read_results(ROOT / "results" / "per_image")
    present = set(df.method.unique())
    if s.method not in present:
        raise UserError(f"stats.{p.profile}.method {s.method!r} has no results; present: {', '.join(sorted(present))}")
    # a trained baseline is one method per training seed ("promptir" means promptir_seed0, promptir_seed1, ...)
    seeded = {m: sorted((x for x in present if (g := SEEDED.match(x)) and g["base"] == m),
                        key=lambda x: int(SEEDED.match(x)["seed"])) for m in s.against}
    against = [x for m in s.against for x in ([m] if m in present else seeded[m])] + sorted(
        set(p.evaluate.external) & present - set(s.against))
    skipped = {m: "no results (not evaluated)" for m in s.against if m not in present and not seeded[m]}
    comparisons, not_measured = [], {}
    for metric in s.metrics:
        if metric not in set(df.metric.unique()):
            not_measured[metric] = "not measured (see results/evaluation.json for the reason)"
            continue
        for b in against:
            comparisons.append(compare_methods(df, s.method, b, metric, None, s.confidence, s.n_boot, s.n_perm,
                                               s.seed))
    out = {"profile": p.profile, "method": s.method, "against": against, "skipped": skipped,
           "not_measured": not_measured, "confidence": s.confidence, "n_boot": s.n_boot, "n_perm": s.n_perm,
           "seed": s.seed, "comparisons": comparisons, "across_seeds": against_seeded(comparisons, s.confidence),
           "seconds": round(time.perf_counter() - started, 1)}
    text = json.dumps(out, indent=1) + "\n"
    atomic_write(OUT, lambda tmp: Path(tmp).write_text(text))
    return out


def _summary(out: dict) -> list[str]:
    return [*(f"stats: {c['metric']:<7} {c['a']} - {c['b']:<16} weighted {w['mean_diff']:+.4f} "
              f"CI [{w['ci'][0]:+.4f}, {w['ci'][1]:+.4f}] p_perm {w['p_perm']:.3g} (n={w['n']})"
              for c in out["comparisons"] for w in [c["weighted"]]),
            *(f"stats: {c['metric']:<7} {c['difference']:<22} over {c['n_seeds']} seeds {c['mean_diff']:+.4f} "
              f"CI [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}] {c['verdict']}"
              for c in out["across_seeds"] if c["group"] == "overall"),
            *(f"stats: {m} {why}" for m, why in out["not_measured"].items()),
            f"stats: {len(out['comparisons'])} comparisons in {out['seconds']} s"]


def main() -> int:
    return stage_main("stats", run, _summary)


if __name__ == "__main__":
    sys.exit(main())
