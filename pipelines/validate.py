"""Stage 0: validate params.yaml completely, every profile's column, so a typo fails in seconds, naming the key;
then check that the chosen profile's weights and datasets are here, listing each missing one with its command.

    python -m pipelines.validate [--params PATH] [--no-preflight]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # the params module imports torch, seconds in which a Ctrl-C can come
        print("python -m pipelines.validate: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    from pipelines.params_yaml import PARAMS
    from pipelines.preflight import check_all, preflight
    from restorevar.errors import UserError

    ap = argparse.ArgumentParser(prog="python -m pipelines.validate", description=__doc__.split("\n")[0])
    ap.add_argument("--params", type=Path, default=PARAMS, help="the params file to check (default: the project's)")
    ap.add_argument("--no-preflight", action="store_true",
                    help="only check the params, not whether the profile's weights and datasets are present")
    args = ap.parse_args(argv)
    name = "params.yaml" if args.params == PARAMS else str(args.params)
    try:
        checked = check_all(args.params)
    except UserError as e:  # the file is named once, in front: "params.yaml: error: line 12: duplicate key ..."
        print(f"{name}: error: {str(e).removeprefix('params.yaml: ').removeprefix(f'{args.params}, ')}",
              file=sys.stderr)
        return 2
    p = checked[0]
    missing = [] if args.no_preflight else preflight(p)
    if missing:
        for line in missing:
            print(f"missing: {line}", file=sys.stderr)
        print(f"{name}: error: profile {p.profile} needs {len(missing)} thing(s) that are not here (listed above); "
              "get them, then run again", file=sys.stderr)
        return 2
    print(f"{name} ok: profile {p.profile}, model {p.model.preset}, "
          f"stages {', '.join(f'{k}({len(v.variants)} trial(s))' for k, v in p.stages.items())}; "
          f"checked profiles {', '.join(q.profile for q in checked)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
