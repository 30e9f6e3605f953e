"""Reading params.yaml: a strict YAML loader, one profile's entry of a section, and typing an entry into its
config dataclass with every message naming where in the file the bad value is (``train_transformer.default``)."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from restorevar.config import from_dict
from restorevar.errors import UserError
from restorevar.fileio import read_regular_text

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"


class _Refused(yaml.MarkedYAMLError):
    """What ``StrictLoader`` refuses; ``load_raw`` words it as one line with the file and the line."""


def _node_paths(root: yaml.Node) -> dict[int, str]:
    """The dotted key of every node of a document (``train_tokenizer.default.loop.steps``), for messages; an
    alias keeps its anchor's. Walked without recursion: the composer has already accepted the nesting."""
    paths: dict[int, str] = {}
    stack: list[tuple[str, yaml.Node]] = [("", root)]
    while stack:
        path, node = stack.pop()
        if id(node) in paths:
            continue
        paths[id(node)] = path
        if isinstance(node, yaml.MappingNode):
            children = [(f"{path}.{k.value}" if path else str(k.value), v) if isinstance(k, yaml.ScalarNode)
                        else (path, v) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(node.value)]
        else:
            continue
        stack.extend(reversed(children))  # in the document's order, so that an anchor is named before its aliases
    return paths


def _abbreviated(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:16]}...{text[-8:]} ({len(text)} characters)"


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader for files people write by hand (params.yaml). It refuses what the plain one lets pass
    silently or turns into a traceback: a key given twice in one mapping (the last would win, so an edit of the
    first would change nothing), a key that is not text (``1:``, ``null:``), an integer beyond any number
    setting (past 4300 digits Python cannot even read it), and a scalar its type cannot hold (the date
    2024-13-01). Merge keys (``<<: *base``) may still be overridden: only the keys written in a mapping itself
    are compared."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._paths: dict[int, str] = {}
        self._checked: set[int] = set()

    def _where(self, node: yaml.Node) -> str:
        path = self._paths.get(id(node), "")
        return f"{path}: " if path else ""

    def construct_document(self, node: yaml.Node) -> Any:
        self._paths = _node_paths(node)
        return super().construct_document(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as e:  # a scalar its tag's type cannot hold
            raise _Refused(problem=f"{self._where(node)}cannot read {_abbreviated(str(node.value))!r} ({e}); "
                                   "quote it if it is text", problem_mark=node.start_mark) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            value = super().construct_yaml_int(node)
        except ValueError:  # more digits than Python converts
            value = None
        if value is None or abs(value) > sys.float_info.max:
            raise _Refused(problem=f"{self._where(node)}the integer {_abbreviated(node.value)} is larger than any "
                                   "setting takes; check it for a typo", problem_mark=node.start_mark)
        return value

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # checked before flattening, which puts the merged keys in front of the mapping's own (once per mapping)
        if id(node) not in self._checked:
            self._checked.add(id(node))
            first: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                if not isinstance(key, str):  # from_dict and every message take keys for names
                    kind = ("null" if key is None else "true/false" if isinstance(key, bool) else
                            "a number" if isinstance(key, (int, float)) else f"a {type(key).__name__}")
                    text = _abbreviated(key_node.value)
                    raise _Refused(problem=f"{self._where(node)}the key {text} reads as {kind}, not as a name; "
                                           f"quote it ('{text}')", problem_mark=key_node.start_mark)
                if key in first:
                    path = self._paths.get(id(node), "")
                    raise _Refused(problem=f"duplicate key {f'{path}.{key}' if path else key} (first at line "
                                           f"{first[key].start_mark.line + 1}); YAML would keep only the last one, "
                                           "silently: delete one of them", problem_mark=key_node.start_mark)
                first[key] = key_node
        super().flatten_mapping(node)


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def load_raw(path: Path = PARAMS) -> dict[str, Any]:
    if not os.path.lexists(path):
        raise UserError(f"params file not found: {path}")
    text = read_regular_text(path, "params file")  # a folder, FIFO or non-UTF-8 file is a UserError naming it
    try:
        data = yaml.load(text, Loader=StrictLoader)
    except _Refused as e:
        raise UserError(f"{path}, line {e.problem_mark.line + 1}: {e.problem}") from None
    except yaml.reader.ReaderError as e:  # a control character: the reader knows its offset, not its line
        line = text.count("\n", 0, e.position) + 1
        raise UserError(f"{path} is not valid YAML at line {line}: {str(e).splitlines()[0]}") from None
    except yaml.YAMLError as e:  # one line: the problem and where, not the parser's multi-line report
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path} is not valid YAML{at}: {problem}") from None
    except RecursionError:  # the composer recurses once per level of nesting
        raise UserError(f"{path} nests its lists or mappings too deeply to read; params.yaml needs a few "
                        "levels") from None
    if not isinstance(data, dict) or "profile" not in data:
        raise UserError(f"{path} must be a mapping with a 'profile' key")
    return data


def _is_setting(cls: type, dotted: str) -> bool:
    """Whether ``dotted`` (``loop.steps``) names a setting of the config dataclass ``cls``."""
    tp: Any = cls
    for part in dotted.split("."):
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            return False
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return False
        tp = hints[part]
    return True


def located(e: UserError, where: str, cls: type | None = None) -> UserError:
    """``e`` with its place in params.yaml (``train_transformer.default``) in front, unless it names it already:
    a config's ``validate()`` serves command lines and checkpoints too, so it names its settings relative to the
    config (``loop.steps``), and that alone does not say which stage and profile hold the bad value."""
    msg = str(e)
    if msg.startswith((f"{where}.", f"{where}:", f"{where} ", f"unknown config key(s) {where}.")):
        return e
    head = re.match(r"[A-Za-z_][\w.]*", msg)
    if cls is not None and head and _is_setting(cls, head.group().rstrip(".")):
        return UserError(f"{where}.{msg}")
    return UserError(f"{where}: {msg}")


def typed(cls: type[T], data: dict[str, Any], where: str) -> T:
    """``from_dict`` of one entry of params.yaml, every message naming the stage, profile and key."""
    try:
        return from_dict(cls, data, where=where)
    except UserError as e:
        raise located(e, where, cls) from None


def profile_entry(raw: dict[str, Any], name: str, profile: str) -> dict[str, Any]:
    """A copy of ``raw[name][profile]``, the profile's settings of one section; a missing or malformed one is a
    UserError that says what to write."""
    if name not in raw:
        raise UserError(f"params.yaml: missing section '{name}'")
    sec = raw[name]
    if sec is None:
        raise UserError(f"params.yaml: section '{name}' is empty (null); give it one entry per profile")
    if not isinstance(sec, dict):
        raise UserError(f"params.yaml: section '{name}' must map each profile to its settings, "
                        f"got {type(sec).__name__}")
    if profile not in sec:
        raise UserError(f"params.yaml: section '{name}' has no entry for profile '{profile}' "
                        f"(has: {', '.join(sec)})")
    entry = sec[profile]
    if entry is None:  # `default:` with nothing after it; {} is how to ask for the defaults
        raise UserError(f"params.yaml: {name}.{profile} is empty (null); write {{}} for the defaults")
    if not isinstance(entry, dict):
        raise UserError(f"params.yaml: {name}.{profile} must be a mapping of settings, got {type(entry).__name__}")
    return copy.deepcopy(entry)


def _nested(key: str, value: Any) -> str:
    """``loop.lr`` and 0.001 as the nested form a message asks for: ``{loop: {lr: 0.001}}``."""
    parts = key.split(".")
    return "{" + ": {".join(parts) + f": {value}" + "}" * len(parts)


def merge(d: dict[str, Any], change: Any, where: str) -> None:
    """Merge ``change`` into ``d`` in place: mappings merge key by key, any other value replaces. The one way
    params.yaml changes a config (a stage's variants, an ablation family's ``set`` and its variants' ``set``), and
    it is written the way the sections themselves are: ``{loop: {lr: 0.001}, model: {overrides: {refiner: {kind:
    none}}}}``. The dotted keys of older files are refused with the nested form to write instead."""
    if not isinstance(change, dict):
        raise UserError(f"{where}: expected a mapping of settings, got {change!r}")
    for key, value in change.items():
        if isinstance(key, str) and "." in key:
            raise UserError(f"{where}: {key!r} is a dotted key, which params.yaml no longer reads; nest it: "
                            f"{_nested(key, value)}")
        here = f"{where}.{key}"
        if isinstance(value, list) and here.endswith(".model.overrides"):
            override_strings(value, here)  # words the old list form
        old = d.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            merge(old, value, here)
        elif isinstance(value, dict) and key in d and old is not None:
            raise UserError(f"{here} is a setting ({old!r}), not a section; give it a value, not a mapping")
        else:
            d[key] = copy.deepcopy(value)


def _override_text(value: Any) -> str:
    """A value as ``apply_overrides`` reads it back: JSON, but a plain string as itself unless it would read
    back as something else (``"1"`` stays a string)."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
    return json.dumps(value)


def override_strings(tree: Any, where: str) -> list[str]:
    """A model's overrides, written in params.yaml as a nested mapping (``{transformer: {conditioning:
    discrete}}``), as the ``section.key=value`` strings a ``ModelRef`` and a checkpoint's stored config hold, in
    the order written. A list of such strings, the older form, is refused with the nested form to write."""
    if isinstance(tree, list):
        first = next((s for s in tree if isinstance(s, str) and "=" in s), "transformer.conditioning=discrete")
        raise UserError(f"{where}: a list of 'key=value' strings is the old form; write a nested mapping, "
                        f"e.g. overrides: {_nested(*first.split('=', 1))}")
    if not isinstance(tree, dict):
        raise UserError(f"{where}: expected a nested mapping of model settings ({{}} for none), got {tree!r}")
    out = []
    for key, value in tree.items():
        if not isinstance(key, str) or "." in key:
            raise UserError(f"{where}: {key!r} is a dotted key; nest it: {_nested(str(key), value)}")
        if isinstance(value, dict):
            out += [f"{key}.{s}" for s in override_strings(value, f"{where}.{key}")]
        else:
            out.append(f"{key}={_override_text(value)}")
    return out


def with_override_strings(d: dict[str, Any], where: str) -> dict[str, Any]:
    """A copy of the stage config ``d`` whose ``model.overrides`` tree is the list of strings its config reads."""
    d = copy.deepcopy(d)
    if isinstance(d.get("model"), dict) and "overrides" in d["model"]:
        d["model"]["overrides"] = override_strings(d["model"]["overrides"], f"{where}.model.overrides")
    return d
