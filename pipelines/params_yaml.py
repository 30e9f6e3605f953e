"""Reading params.yaml: a strict YAML loader, one profile's entry of a section, and typing an entry into its
config dataclass with every message naming where in the file the bad value is (``train_transformer.default``)."""
from __future__ import annotations

import copy
import dataclasses
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


def set_dotted(d: dict[str, Any], key: str, value: Any, where: str) -> None:
    """``d[a][b] = value`` for ``key`` 'a.b'. ``model.overrides`` is added to, not replaced: a variant's
    overrides (``transformer.positions=ape``) apply on top of the profile's own (its image size, say).
    ``where`` (the variant) is named when ``key`` reaches inside a setting rather than a section."""
    if key == "model.overrides" and isinstance(value, list):
        value = list(d.get("model", {}).get("overrides", [])) + [v for v in value
                                                                   if v not in d.get("model", {}).get("overrides", [])]
    parts = key.split(".")
    for i, p in enumerate(parts[:-1]):
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise UserError(f"{where}: {key!r} reaches inside {'.'.join(parts[:i + 1])}, which is a setting, not a "
                            "section; give the setting's own dotted key")
    d[parts[-1]] = value
