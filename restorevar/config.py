"""Typed dataclass configs that reject unknown keys.

Every config in the suite is a frozen-free dataclass built from plain dicts (params.yaml, a
checkpoint's stored config, ``--set`` overrides). A misspelt key is an error, never a silent
default, because a silently ignored key produces a run that differs from what was asked for.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

from restorevar.errors import UserError

T = TypeVar("T")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert ``value`` to the annotated type ``tp``; raise UserError naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, where=where)
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        last: UserError | None = None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except UserError as e:
                last = e
        raise last or UserError(f"{where}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise UserError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        if len(args) != 2:
            return dict(value)
        return {_coerce(args[0], k, f"{where} key"): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        # YAML reads .nan and .inf as numbers, and no setting means either: a NaN learning rate would
        # surface only as NaN losses hours later, a NaN threshold as a comparison that is always false
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        if not math.isfinite(number):
            raise UserError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build ``cls`` from ``data``; unknown keys and ill-typed values raise UserError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    prefix = f"{where}." if where else ""
    if unknown:
        raise UserError(
            f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
            f"valid keys for {cls.__name__}: {', '.join(sorted(names))}"
        )
    missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
               if f.name not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UserError(f"missing config key(s) {', '.join(prefix + m for m in missing)} for {cls.__name__}")
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def _shown(value: object) -> str:
    """``value`` for a message: an integer too long to read (Python refuses to print past 4300 digits) by its size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    return f"{value:g}" if isinstance(value, float) else repr(value)


def check_range(key: str, value: float, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> None:
    """Raise UserError naming ``key`` unless ``value`` lies between ``low`` and ``high`` (an open end excluded);
    NaN never does."""
    above = low < value if low_open else low <= value
    below = value < high if high_open else value <= high
    if not (above and below):
        lo, hi = _shown(low), _shown(high)
        span = (f"between {lo} and {hi}" if not (low_open or high_open) else
                f"in {'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}")
        raise UserError(f"{key} must be {span}, got {_shown(value)}")


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain, JSON-able dict of a (nested) config dataclass; tuples become lists."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return conv(obj)


def _parse_scalar(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except ValueError:  # not JSON, or an integer past Python's 4300 digits: the text, which the type check refuses
        return text


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Return a copy of ``cfg`` with dotted ``key=value`` overrides (values parsed as JSON if possible)."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise UserError(f"override {key!r}: {p!r} is not a config section")
            node = node[p]
        if parts[-1] not in node:
            raise UserError(f"override {key!r}: unknown key {parts[-1]!r}")
        node[parts[-1]] = _parse_scalar(raw)
    return from_dict(type(cfg), data)
