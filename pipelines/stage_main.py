"""Every DVC stage's entry point: the stage's work, then its summary lines.

A ``UserError`` (bad params, a missing input) is one line on stderr and exit code 2; Ctrl-C is one line and
exit code 130; any other exception keeps Python's traceback and exit code 1, so DVC stops the pipeline with the
evidence on screen.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import TypeVar

from restorevar.errors import UserError

T = TypeVar("T")


def stage_main(name: str, work: Callable[[], T], summary: Callable[[T], Iterable[str]] | None = None) -> int:
    try:
        result = work()
        lines = list(summary(result)) if summary else []
    except UserError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    for line in lines:
        print(line, flush=True)
    return 0
