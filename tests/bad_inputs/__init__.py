"""Tables of bad inputs, one module per area; ``tests/test_bad_inputs.py`` runs them all.

Each module defines ``CASES``, a list of ``Case``. A case's ``setup(tmp)`` builds whatever files it needs
under ``tmp`` and returns the argv of the command (``restorevar`` by default). The runner then checks:
the exit code, that stderr holds ``fragment``, that stderr holds no traceback and at most one error line,
and that no file which existed before the command was changed, replaced or deleted. A setup function may carry
an ``env`` dict of extra environment variables for its command (see ``restore._as_unprivileged``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path], list[str]]
    fragment: str  # expected in stderr (case-insensitive)
    code: int = 2
    entry: str = "restorevar"  # "restorevar" (restorevar.cli.main) or "validate" (pipelines.validate.main)
    timeout_s: float = 120.0  # a hang (a FIFO, a benchmark before the check) fails the case
