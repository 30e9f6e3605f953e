"""``restorevar stats compare`` and ``restorevar regress``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_compare(args: argparse.Namespace) -> int:
    from restorevar.metrics.results import read_results
    from restorevar.stats.compare import compare_methods, comparison_table, format_table

    df = read_results(args.results)
    res = compare_methods(df, args.a, args.b, args.metric, args.protocol, args.confidence, args.n_boot,
                          args.n_perm, args.seed)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    table = format_table(comparison_table(res))
    print(f"{args.metric}: A = {args.a}, B = {args.b}, difference A - B per image, protocol {res['protocol']}; "
          "Holm runs over each p column")
    print(table.to_markdown(index=False))
    for m, k in res["unmatched"].items():
        if k:
            print(f"note: {k} image(s) of {m} have no partner and are left out", file=sys.stderr)
    return 0


def cmd_regress(args: argparse.Namespace) -> int:
    from restorevar.fileio import atomic_write
    from restorevar.regress import compare, load_baseline, make_baseline, markdown, report_markdown

    if args.update:
        # the old values are about to be replaced, so only the tolerances need to be sound
        new = make_baseline(args.current, load_baseline(args.baseline, check_values=False), note=args.note)
        text = json.dumps(new, indent=1, allow_nan=False) + "\n"  # make_baseline let no NaN through; never write one
        atomic_write(args.baseline, lambda tmp: Path(tmp).write_text(text))
        print(f"baseline {args.baseline} updated from {args.current} ({len(new['metrics'])} metrics)")
        return 0
    checks = compare(args.baseline, args.current)
    print(markdown(checks))
    if args.report:
        text = report_markdown(checks, args.baseline, args.current)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.report, lambda tmp: Path(tmp).write_text(text))
        print(f"regress: report written to {args.report}", file=sys.stderr)
    bad = [c for c in checks if c.status in ("regressed", "missing")]
    if bad:
        print(f"regress: {len(bad)} metric(s) regressed or missing: " + ", ".join(f"{c.name} ({c.status})" for c in bad),
              file=sys.stderr)
        return 1
    print(f"regress: all {len(checks)} metrics within tolerance", file=sys.stderr)
    return 0


def add_stats_parser(sub, parser_class, help: str) -> None:
    s = sub.add_parser("stats", help=help)
    ssub = s.add_subparsers(dest="stats_command", required=True, parser_class=parser_class)
    c = ssub.add_parser("compare", help="compare method A with method B on one metric, image by image")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--metric", required=True, help="psnr, ssim, lpips, musiq or clipiqa")
    c.add_argument("--results", type=Path, default=Path("results/per_image"),
                   help="folder of per-image .parquet/.csv files (default results/per_image)")
    c.add_argument("--protocol", help="protocol id, when the results hold several")
    c.add_argument("--confidence", type=float, default=0.95)
    c.add_argument("--n-boot", type=int, default=2000)
    c.add_argument("--n-perm", type=int, default=10000)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_compare)


def add_regress_parser(sub, help: str) -> None:
    r = sub.add_parser("regress", help=help)
    r.add_argument("--baseline", required=True, type=Path)
    r.add_argument("--current", required=True, type=Path)
    r.add_argument("--update", action="store_true",
                   help="write the current values into the baseline (same metrics and tolerances)")
    r.add_argument("--note", default="", help="with --update: why the baseline moved")
    r.add_argument("--report", type=Path,
                   help="also write the verdict and the table to this Markdown file (e.g. reports/regression.md)")
    r.set_defaults(func=cmd_regress)
