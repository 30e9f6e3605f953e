"""DVC stage `corpus` (pretrain/pipeline.yaml): `restorevar data corpus` with the stage's arguments.

A module of its own, rather than the `restorevar` console script, so that the stage depends on the corpus
code alone: the console script imports every sub-command, and any model change would rebuild the corpus
and with it the whole pretraining.
"""
from __future__ import annotations

import argparse
import sys

from restorevar.data.cli import add_data_parser
from restorevar.errors import UserError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.corpus")
    add_data_parser(parser.add_subparsers(dest="command", required=True), argparse.ArgumentParser)
    args = parser.parse_args(["data", "corpus", *argv])
    try:
        return args.func(args)
    except UserError as e:
        print(f"corpus: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
