"""Regression report: every baseline metric against the current run, with its tolerance.

The baseline (``benchmarks/baseline.json``) lists metrics by their dotted path in metrics.json::

    {"metrics": {"rgb-crop0-resize32.restorevar.overall.psnr":
                   {"value": 9.81, "tolerance": 0.5, "better": "higher"}, ...}}

A metric regresses when it is worse than the baseline by more than its tolerance (absolute; or relative
when ``"relative": true``). Better-than-baseline values never fail. A baseline metric missing from the
current run fails too, because a silently dropped metric hides regressions.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restorevar.errors import UserError


def flatten(obj: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}; check the path") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {path} is not valid JSON: {e}") from None


@dataclass
class Check:
    name: str
    baseline: float
    current: float | None
    tolerance: float
    relative: bool
    better: str

    @property
    def delta(self) -> float | None:
        return None if self.current is None else self.current - self.baseline

    @property
    def allowed(self) -> float:
        return self.tolerance * abs(self.baseline) if self.relative else self.tolerance

    @property
    def status(self) -> str:
        if self.current is None or not math.isfinite(self.current):
            return "missing"
        worse = -self.delta if self.better == "higher" else self.delta
        return "regressed" if worse > self.allowed else ("improved" if worse < -self.allowed else "ok")


def load_baseline(path: str | Path) -> dict[str, dict[str, Any]]:
    data = _read_json(path, "baseline")
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict) or not metrics:
        raise UserError(f"baseline {path} needs a non-empty 'metrics' mapping; see benchmarks/README.md")
    for name, spec in metrics.items():
        if not isinstance(spec, dict) or "value" not in spec or "tolerance" not in spec:
            raise UserError(f"baseline {path}: metric {name!r} needs 'value' and 'tolerance'")
        if spec.get("better", "higher") not in ("higher", "lower"):
            raise UserError(f"baseline {path}: metric {name!r} has better={spec['better']!r}; use 'higher' or 'lower'")
    return metrics


def compare(baseline: str | Path, current: str | Path) -> list[Check]:
    spec = load_baseline(baseline)
    cur = flatten(_read_json(current, "current metrics"))
    return [Check(name, float(s["value"]), cur.get(name), float(s["tolerance"]), bool(s.get("relative", False)),
                  s.get("better", "higher")) for name, s in spec.items()]


def markdown(checks: list[Check]) -> str:
    def fmt(x: float | None) -> str:
        return "—" if x is None else f"{x:.4g}"

    lines = ["| metric | baseline | current | delta | tolerance | better | status |",
             "|---|---:|---:|---:|---:|---|---|"]
    for c in checks:
        tol = f"{c.tolerance:.0%}" if c.relative else f"±{c.tolerance:g}"
        mark = {"regressed": "**REGRESSED**", "missing": "**MISSING**"}.get(c.status, c.status)
        delta = "—" if c.delta is None else f"{c.delta:+.4g}"
        lines.append(f"| `{c.name}` | {fmt(c.baseline)} | {fmt(c.current)} | {delta} | {tol} | {c.better} | {mark} |")
    return "\n".join(lines)


def make_baseline(current: str | Path, metrics: dict[str, dict[str, Any]], note: str = "") -> dict[str, Any]:
    """A new baseline from a run: the same metric names and tolerances, the current values."""
    cur = flatten(_read_json(current, "current metrics"))
    missing = [m for m in metrics if m not in cur]
    if missing:
        raise UserError(f"{current} lacks {missing[0]}; cannot baseline a metric the run did not produce")
    return {"note": note, "metrics": {m: {**s, "value": round(cur[m], 6)} for m, s in metrics.items()}}
