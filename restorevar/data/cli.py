"""``restorevar data ...`` subcommands: synth, check, fetch, fetch-weights, corpus."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from restorevar.errors import UserError


def cmd_synth(args: argparse.Namespace) -> int:
    from restorevar.data.synth import SynthConfig, synth

    cfg = SynthConfig(size=args.size, train_per_degradation=args.train_per_degradation,
                      test_per_degradation=args.test_per_degradation, seed=args.seed)
    info = synth(args.out, cfg, progress=not args.quiet, overwrite=args.overwrite)
    print(f"synth: wrote {info['pairs']['train']} train and {info['pairs']['test']} test pairs of {cfg.size} px "
          f"to {args.out} in {info['seconds']} s (seed {cfg.seed})", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from restorevar.data.manifest import check_manifest, count_table

    entries, problems = check_manifest(args.manifest, other=args.against, allow_outside_root=args.allow_outside_root)
    print(count_table(entries))
    for p in problems:
        print(f"problem: {p}")
    if problems:
        first = " ".join(str(problems[0]).split())  # one line even if a path or decoder message holds a newline
        raise UserError(f"{len(problems)} problem(s): first {first}; all are listed above, fix them and check "
                        "again")
    print(f"ok: {len(entries)} entries", file=sys.stderr)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from restorevar.data.registry import fetch_dataset

    result = fetch_dataset(args.name, Path(args.root), allow_download=not args.no_download, progress=not args.quiet)
    print(json.dumps(result, indent=1))
    return 0 if result["status"] == "ready" else 1


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    from restorevar.data.weights import fetch_weights, format_table

    rows = fetch_weights(Path(args.cache), allow_download=not args.no_download, progress=not args.quiet,
                         only=args.only)
    print(format_table(rows))
    missing = [r for r in rows if r["required"] and r["status"] != "present"]
    print(f"{len(rows) - len(missing)}/{len(rows)} weight files present in {args.cache}"
          + (f"; missing: {', '.join(r['name'] for r in missing)}" if missing else ""), file=sys.stderr)
    return 1 if missing else 0


def cmd_grid(args: argparse.Namespace) -> int:
    from restorevar.data.grid import example_grid

    print(f"grid: wrote {example_grid(args.out, size=args.size, seed=args.seed)}", file=sys.stderr)
    return 0


def cmd_corpus(args: argparse.Namespace) -> int:
    from restorevar.data.corpus import build_corpus

    info = build_corpus(args.source, args.out, max_side=args.max_side, min_side=args.min_side, cache=args.cache,
                        overwrite=args.overwrite, progress=not args.quiet)
    reasons: dict[str, int] = {}
    for e in info["excluded"]:
        reasons[e["reason"]] = reasons.get(e["reason"], 0) + 1
    kept = ", ".join(f"{n} from {s}" for s, n in info["kept"].items())
    why = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    print(f"corpus: kept {len(info['images'])} images of {len({i['scene'] for i in info['images']})} scenes ({kept}); "
          f"excluded {len(info['excluded'])}" + (f" ({why})" if why else "")
          + f"; wrote {args.out} in {info['seconds']} s", file=sys.stderr)
    return 0


def add_data_parser(sub, parser_class, help: str | None = None) -> None:
    d = sub.add_parser("data", help=help)
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=parser_class)

    s = dsub.add_parser("synth", help="write the embedded synthetic all-in-one benchmark (no downloads)")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--size", type=int, default=64, help="patch size in pixels (default 64)")
    s.add_argument("--train-per-degradation", type=int, default=64)
    s.add_argument("--test-per-degradation", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--overwrite", action="store_true",
                   help="replace an earlier benchmark in --out (its train/, test/ and JSON files; nothing else)")
    s.set_defaults(func=cmd_synth)

    g = dsub.add_parser("grid", help="an example image: one row per synthetic degradation")
    g.add_argument("--out", type=Path, default=Path("docs/synth_examples.png"))
    g.add_argument("--size", type=int, default=96)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=cmd_grid)

    c = dsub.add_parser("check", help="validate a manifest in the published format; exit 2 listing every problem")
    c.add_argument("manifest", type=Path)
    c.add_argument("--against", type=Path,
                   help="another manifest (e.g. test.json) that must not overlap, by path or by file content")
    c.add_argument("--allow-outside-root", action="store_true",
                   help="accept absolute paths and paths that leave the manifest's folder through '..'")
    c.set_defaults(func=cmd_check)

    f = dsub.add_parser("fetch", help="download (or explain how to get) a real dataset and write its manifests")
    f.add_argument("name")
    f.add_argument("--root", default="data/raw")
    f.add_argument("--no-download", action="store_true", help="never touch the network; adapt what is present")
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=cmd_fetch)

    k = dsub.add_parser("corpus", help="a photo corpus for pre-training, from shipped photos, Debian wallpaper "
                        "packages and folders")
    k.add_argument("--source", action="append", required=True,
                   help="shipped, deb:<package> (apt-get download) or folder:<path>; repeatable")
    k.add_argument("--out", required=True, type=Path)
    k.add_argument("--max-side", type=int, default=768, help="downscale so the shorter side is at most this (768)")
    k.add_argument("--min-side", type=int, default=128, help="leave out images whose shorter side is smaller (128)")
    k.add_argument("--cache", type=Path, help="where .deb files are downloaded and reused (default: .deb-cache "
                   "beside --out)")
    k.add_argument("--quiet", action="store_true", help="no progress bar")
    k.add_argument("--overwrite", action="store_true",
                   help="replace an earlier corpus in --out (its images/ and corpus.json; nothing else)")
    k.set_defaults(func=cmd_corpus)

    w = dsub.add_parser("fetch-weights", help="cache the weights metrics and initialisation need")
    w.add_argument("--cache", default="weights")
    w.add_argument("--only", action="append", help="a weight name to fetch (repeatable); default all")
    w.add_argument("--no-download", action="store_true")
    w.add_argument("--quiet", action="store_true")
    w.set_defaults(func=cmd_fetch_weights)
