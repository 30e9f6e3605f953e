"""Regression report: every baseline metric against the current run, with its tolerance.

The baseline (``benchmarks/baseline.json``) lists metrics by their dotted path in metrics.json::

    {"metrics": {"rgb-crop0-resize32.restorevar.overall.psnr":
                   {"value": 9.81, "tolerance": 0.5, "better": "higher"}, ...}}

A metric regresses when it is worse than the baseline by more than its tolerance (absolute; or relative
when ``"relative": true``). Better-than-baseline values never fail. A baseline metric missing from the
current run fails too, because a silently dropped metric hides regressions.

A metric measured over training seeds (a name ending in ``.mean`` whose run also writes ``.seed_sd`` and
``.seeds`` beside it, as the ablations' metrics.json does) carries its measured spread in the baseline::

    {"value": 10.62, "seed_sd": 0.21, "seeds": 2, "tolerance": 0.01, "better": "higher"}

and may fall by q * sd * sqrt(2 / seeds), or by ``tolerance`` if that is larger (the floor for a metric
whose seeds agree): sd * sqrt(2 / seeds) is the standard deviation of a difference between two means of
``seeds`` runs, and q the one-sided t quantile on seeds - 1 degrees of freedom at ``SEED_FALSE_ALARM``, so
that a healthy re-run fails that rarely even though sd is estimated from few seeds (q = 31.8 for 2 seeds,
6.96 for 3, 3.75 for 5). Float differences between CPUs grow during training much as a change of seed
does, so the seed spread is the measured scale of what a re-run on another machine may move. ``--update``
refreshes the spread with the values.

Every baseline value, tolerance and current value of a baseline metric must be a finite number: NaN
compares false with everything, so a NaN anywhere would pass the gate whatever the run did. A non-number
is bad input (a UserError naming the metric and the file), never a pass.

The comparison rounds: how much worse the value is and how much it may be worse are each rounded to
``COMPARE_DECIMALS`` (9) decimal places before they are compared, so a value worse by exactly its tolerance
passes, whatever binary float subtraction makes of it (0.4 - 0.3 is 0.10000000000000003). Nine places are
far below the five or six that metrics.json and the baseline store, so no real change is rounded away.

Each file must say every value once. A key that JSON would keep only the last of (the same key twice in
one object), or a dotted key that spells the same path as nested keys (``"p.model.overall.psnr"`` beside
``{"p": {"model": ...}}``, in either order, at any depth), is bad input: one of the two would hide the
other. So is a file that is not a regular UTF-8 file (a FIFO, a folder), nesting too deep to read, or an
integer literal too long to convert.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restorevar.errors import UserError
from restorevar.fileio import read_regular_text


def _unique_keys(what: str, path: Path):
    """An ``object_pairs_hook`` refusing a key given twice in one object: json keeps the last silently."""
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise UserError(f"{what} {path} gives the key {_show(k)} twice in one object, and JSON keeps only "
                                "the last; keep one of them")
            out[k] = v
        return out

    return hook


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    text = read_regular_text(path, what)  # a FIFO, a folder or non-UTF-8 bytes: a UserError naming the file
    try:
        return json.loads(text, object_pairs_hook=_unique_keys(what, path))
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {path} is not valid JSON: {e}") from None
    except ValueError as e:  # an integer literal past Python's limit on int-string conversion
        if "integer string conversion" not in str(e):
            raise UserError(f"{what} {path} is not valid JSON: {e}") from None
        raise UserError(f"{what} {path} holds an integer literal of over {sys.get_int_max_str_digits()} digits, "
                        "too long to read; no metric has that many digits, fix the file") from None
    except RecursionError:
        raise UserError(f"{what} {path} is nested too deeply to read (no metrics file nests that far); "
                        "fix the file") from None


SEED_FALSE_ALARM = 0.01  # how often a healthy re-run may fail a metric that carries its seed spread
MAX_SEEDS = 10_000  # more "seeds" than any study trains is a damaged file, and scipy cannot take huge counts
COMPARE_DECIMALS = 9  # see the module docstring: exactly-at-tolerance passes, whatever the float rounding


@dataclass
class Check:
    name: str
    baseline: float
    current: float | None
    tolerance: float
    relative: bool
    better: str
    seed_sd: float | None = None  # the baseline's measured spread over `seeds` training seeds
    seeds: int = 0

    @property
    def delta(self) -> float | None:
        return None if self.current is None else self.current - self.baseline

    @property
    def allowed(self) -> float:
        floor = self.tolerance * abs(self.baseline) if self.relative else self.tolerance
        return max(floor, self.seed_allowed or 0.0)

    @property
    def seed_allowed(self) -> float | None:
        if self.seed_sd is None:
            return None
        return self.seed_quantile * self.seed_sd * math.sqrt(2 / self.seeds)

    @property
    def seed_quantile(self) -> float:
        from scipy import stats

        return float(stats.t.ppf(1 - SEED_FALSE_ALARM, self.seeds - 1))

    @property
    def status(self) -> str:
        if self.current is None or not math.isfinite(self.current):
            return "missing"
        # rounded, so that a value worse by exactly the tolerance passes however the subtraction rounds
        worse = round(-self.delta if self.better == "higher" else self.delta, COMPARE_DECIMALS)
        allowed = round(self.allowed, COMPARE_DECIMALS)
        return "regressed" if worse > allowed else ("improved" if worse < -allowed else "ok")


def _show(v: Any, limit: int = 60) -> str:
    """A value as the JSON file spells it: NaN, Infinity, null, true, "ten"; cut short past ``limit``
    characters so that the error stays one readable line."""
    try:
        text = json.dumps(v)
    except (TypeError, ValueError, RecursionError):  # a nesting or an integer too large to write back
        return f"a {type(v).__name__} too large to show"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _is_finite_number(v: Any) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer literal beyond float range
        return False


def load_baseline(path: str | Path, check_values: bool = True) -> dict[str, dict[str, Any]]:
    """The baseline's metrics, each checked. ``check_values=False`` (for ``--update``, which replaces every
    value) skips the values, so a damaged baseline can be rebuilt; the tolerances are checked always."""
    data = _read_json(path, "baseline")
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict) or not metrics:
        raise UserError(f"baseline {path} needs a non-empty 'metrics' mapping; see benchmarks/README.md")
    for name, spec in metrics.items():
        if not isinstance(spec, dict) or "value" not in spec or "tolerance" not in spec:
            raise UserError(f"baseline {path}: metric {name!r} needs 'value' and 'tolerance'")
        if check_values and not _is_finite_number(spec["value"]):
            raise UserError(f"baseline {path}: metric {name!r} has value {_show(spec['value'])}; a baseline value "
                            "must be a finite number (fix it, or rewrite the values with `restorevar regress --update`)")
        tol = spec["tolerance"]
        if not _is_finite_number(tol) or tol < 0:
            raise UserError(f"baseline {path}: metric {name!r} has tolerance {_show(tol)}; "
                            "a tolerance must be a finite number >= 0")
        if not isinstance(spec.get("relative", False), bool):
            raise UserError(f"baseline {path}: metric {name!r} has relative={_show(spec['relative'])}; "
                            "use true or false")
        if "seed_sd" in spec or "seeds" in spec:
            sd, k = spec.get("seed_sd"), spec.get("seeds")
            if (not _is_finite_number(sd) or sd < 0 or isinstance(k, bool) or not isinstance(k, int)
                    or not 2 <= k <= MAX_SEEDS):
                raise UserError(f"baseline {path}: metric {name!r} has seed_sd={_show(sd)}, seeds={_show(k)}; "
                                f"a seed spread needs seed_sd >= 0 measured over seeds >= 2 training runs "
                                f"(at most {MAX_SEEDS})")
        if spec.get("better", "higher") not in ("higher", "lower"):
            raise UserError(f"baseline {path}: metric {name!r} has better={_show(spec['better'])}; "
                            "use 'higher' or 'lower'")
    return metrics


def _leaves(obj: dict[str, Any], what: str, path: str | Path) -> dict[str, Any]:
    """Every non-mapping value by dotted path, numbers or not, so that a bad value is named, not skipped.

    A dotted path reached by two routes (a dotted key and nested keys that spell it, in either order, at any
    depth) is a UserError: whichever came last would hide the other's value. Walked with a stack, not by
    recursion, so that deep nesting cannot overflow Python's stack.
    """
    out: dict[str, Any] = {}
    routes: dict[str, tuple[str, ...]] = {}  # every path met so far (mappings too) -> the keys that led there
    stack: list[tuple[tuple[str, ...], Any]] = [((k,), v) for k, v in reversed(obj.items())]
    while stack:
        route, value = stack.pop()
        name = ".".join(route)
        if name in routes:
            first, second = sorted([routes[name], route], key=len)
            raise UserError(f"{what} {path}: {_show(name)} is given twice, as the keys {_show(list(first), 200)} and "
                            f"{_show(list(second), 200)}, so one would hide the other; write each metric once "
                            "(nested, without dots in its keys)")
        routes[name] = route
        if isinstance(value, dict):
            stack.extend((route + (k,), v) for k, v in reversed(value.items()))
        else:
            out[name] = value
    return out


def current_values(current: str | Path, names: list[str]) -> dict[str, float | None]:
    """The run's value of each baseline metric, None where the run lacks it; a value that is there but is
    not a finite number is a UserError (it would otherwise compare as "within tolerance" or vanish)."""
    data = _read_json(current, "current metrics")
    leaves = _leaves(data, "current metrics", current) if isinstance(data, dict) else {}
    out: dict[str, float | None] = {}
    for name in names:
        if name not in leaves:
            out[name] = None
        elif not _is_finite_number(leaves[name]):
            raise UserError(f"current metrics {current}: metric {name!r} is {_show(leaves[name])}, not a finite "
                            "number; fix the run that wrote it (a metric it could not compute should be left out)")
        else:
            out[name] = float(leaves[name])
    return out


def compare(baseline: str | Path, current: str | Path) -> list[Check]:
    spec = load_baseline(baseline)
    cur = current_values(current, list(spec))
    return [Check(name, float(s["value"]), cur[name], float(s["tolerance"]), s.get("relative", False),
                  s.get("better", "higher"), s.get("seed_sd"), s.get("seeds", 0)) for name, s in spec.items()]


def markdown(checks: list[Check]) -> str:
    def fmt(x: float | None) -> str:
        return "—" if x is None else f"{x:.4g}"

    lines = ["| metric | baseline | current | delta | tolerance | better | status |",
             "|---|---:|---:|---:|---:|---|---|"]
    for c in checks:
        tol = f"{c.tolerance:.0%}" if c.relative else f"±{c.tolerance:g}"
        if c.seed_allowed is not None:
            tol = f"±{c.allowed:.3g} ({c.seed_quantile:.3g} × seed SD {c.seed_sd:.3g} × √(2/{c.seeds}); floor {tol})"
        mark = {"regressed": "**REGRESSED**", "missing": "**MISSING**"}.get(c.status, c.status)
        delta = "—" if c.delta is None else f"{c.delta:+.4g}"
        lines.append(f"| `{c.name}` | {fmt(c.baseline)} | {fmt(c.current)} | {delta} | {tol} | {c.better} | {mark} |")
    return "\n".join(lines)


def verdict_line(checks: list[Check]) -> str:
    """One line for the top of a report: pass or fail, and what failed."""
    bad = [c for c in checks if c.status in ("regressed", "missing")]
    if not bad:
        better = sum(c.status == "improved" for c in checks)
        return f"**PASS**: all {len(checks)} metrics within tolerance" + (f" ({better} improved)" if better else "")
    return (f"**FAIL**: {len(bad)} of {len(checks)} metrics regressed or missing: "
            + ", ".join(f"`{c.name}` ({c.status})" for c in bad))


def report_markdown(checks: list[Check], baseline: str | Path, current: str | Path) -> str:
    """The file a pull request shows (``restorevar regress --report``): the verdict, then the table."""
    return (f"# Regression report\n\n{verdict_line(checks)}\n\nBaseline `{baseline}`, current run `{current}`. "
            "A metric fails when it is worse than its baseline by more than its tolerance (both rounded to "
            f"{COMPARE_DECIMALS} decimal places, so exactly the tolerance passes), or is missing; "
            "improvements never fail.\n\n" + markdown(checks) + "\n")


def _spread_names(name: str) -> tuple[str, str]:
    base = name.removesuffix(".mean")
    return f"{base}.seed_sd", f"{base}.seeds"


def make_baseline(current: str | Path, metrics: dict[str, dict[str, Any]], note: str = "") -> dict[str, Any]:
    """A new baseline from a run: the same metric names and tolerances, the current values (and, for a
    metric measured over seeds, the run's seed spread)."""
    spread = {m: _spread_names(m) for m, s in metrics.items() if "seed_sd" in s}
    cur = current_values(current, list(metrics) + [n for pair in spread.values() for n in pair])
    missing = [m for m in metrics if cur[m] is None]
    missing += [n for pair in spread.values() for n in pair if cur[n] is None]
    if missing:
        raise UserError(f"{current} lacks {missing[0]}; cannot baseline a metric the run did not produce")
    out = {m: {**s, "value": round(cur[m], 6)} for m, s in metrics.items()}
    for m, (sd, k) in spread.items():
        if int(cur[k]) < 2:
            raise UserError(f"{current}: {m} was measured over {int(cur[k])} seed(s); a seed spread needs two or more")
        if int(cur[k]) > MAX_SEEDS:  # the baseline would be refused when next read
            raise UserError(f"{current}: {k} is {cur[k]:g}, over {MAX_SEEDS} seeds; fix the run that wrote it")
        out[m].update(seed_sd=round(cur[sd], 6), seeds=int(cur[k]))
    return {"note": note, "metrics": out}
