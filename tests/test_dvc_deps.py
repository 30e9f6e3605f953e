"""dvc.yaml (and pretrain/dvc.yaml) declares what every stage runs and reads, so `dvc repro` never reuses a result made by other code,
other data or other params, and declares no code or params that the stage does not use.

Every stage of dvc.yaml, as DVC itself expands it (``foreach`` included), is checked for:

- code: the project modules its command runs (``python -m pipelines.X``; ``restorevar SUB``, the console
  script, runs restorevar.cli with the handler of SUB). They come from a walk over the source (``Run``): a
  module's import-time code runs, and so does every function that code (or other code that runs) names,
  with the imports inside it, lazy ones too. A method is matched by its name on any object, not by type,
  so the walk can only err towards more modules, never fewer; it is checked against what Python itself
  imports. Modules that only document themselves (a docstring, ``__version__``) need not be listed.
- data files: the project files named on its command line, and the data files in the packages that the
  code that runs names, must be deps too.
- params: the ``Params`` attributes that the code which runs reads, looked up on a ``Params`` that records
  which params.yaml entries each lookup reads (``pipelines.params.Params.reads``). dvc.yaml must list
  them, keyed by the profile (``evaluate.${profile}``), so that editing another profile's column re-runs
  nothing.

A dep folder covers the files under it. Deps that are outputs of other stages are not code and are not
checked here; each stage must still list the code deps it uses and no code dep it does not.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import yaml

from pipelines.params import PARAMS, PROFILE_SECTIONS, UNTRACKED, Params

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("restorevar", "pipelines", "benchmarks")
ATTRIBUTE_CALLS = ("getattr", "hasattr", "setattr")
MODULE_STRING = re.compile(r"^((?:{})(?:\.\w+)*)(?::(\w+))?$".format("|".join(PACKAGES)))


# ------------------------------------------------------------------------------------------------
# the project's source: modules and the pieces of code that run together
# ------------------------------------------------------------------------------------------------
def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for f in (base / "__init__.py", base.with_suffix(".py")):
        if f.is_file():
            return f
    return None


def _is_type_checking(node: ast.AST) -> bool:
    t = node.test if isinstance(node, ast.If) else None
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


@dataclass
class Code:
    """Statements that run together: a module's import-time code, or one function (nested ones included)."""

    module: str
    name: str | None  # None: the module's import-time code
    nodes: list[ast.AST]
    cls: str | None = None  # the class a method belongs to


@dataclass
class Module:
    name: str
    path: Path
    top: Code
    functions: dict[str, list[Code]] = field(default_factory=lambda: defaultdict(list))
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)


def _def_time(d: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> list[ast.AST]:
    """What runs when a def statement itself runs: decorators, defaults, base classes."""
    out: list[ast.AST] = list(d.decorator_list)
    if isinstance(d, ast.ClassDef):
        out += d.bases + d.keywords
    else:
        out += [x for x in d.args.defaults + d.args.kw_defaults if x is not None]
    return out


@cache
def load_module(name: str) -> Module | None:
    path = module_file(name)
    if path is None:
        return None
    tree = ast.parse(path.read_text(), str(path))
    mod = Module(name, path, Code(name, None, []))

    def visit(body: list[ast.stmt], cls: str | None) -> None:
        for stmt in body:
            if _is_type_checking(stmt):  # never runs; only its `else` does
                visit(stmt.orelse, cls)
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                mod.top.nodes += _def_time(stmt)
                mod.functions[stmt.name].append(Code(name, stmt.name, [stmt], cls))
            elif isinstance(stmt, ast.ClassDef):
                mod.top.nodes += _def_time(stmt)
                mod.classes[stmt.name] = stmt
                visit(stmt.body, stmt.name)
            else:
                mod.top.nodes.append(stmt)

    visit(tree.body, None)
    return mod


def _package(module: str) -> str:
    path = module_file(module)
    return module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]


def _walk(nodes: list[ast.AST]):
    """Every node under ``nodes`` except the bodies of ``if TYPE_CHECKING:``."""
    todo = list(nodes)
    while todo:
        n = todo.pop()
        yield n
        if _is_type_checking(n):
            todo.extend(n.orelse)
            continue
        todo.extend(ast.iter_child_nodes(n))


def _dispatch(nodes: list[ast.AST]) -> tuple[dict[str, set[str]], set[int]]:
    """argparse sub-commands: ``v = sub.add_parser("name")`` ... ``v.set_defaults(func=handler)``.

    Returns name -> handler names, and the ids of the handler Name nodes: a handler runs only for its
    sub-command, so naming it there does not make it run."""
    parsers: dict[str, str] = {}
    for n in _walk(nodes):
        if (isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
                and isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Attribute)
                and n.value.func.attr == "add_parser" and n.value.args
                and isinstance(n.value.args[0], ast.Constant) and isinstance(n.value.args[0].value, str)):
            parsers[n.targets[0].id] = n.value.args[0].value
    handlers: dict[str, set[str]] = defaultdict(set)
    ids: set[int] = set()
    for n in _walk(nodes):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "set_defaults":
            for kw in n.keywords:
                if kw.arg == "func" and isinstance(kw.value, ast.Name):
                    owner = n.func.value
                    sub = parsers.get(owner.id) if isinstance(owner, ast.Name) else None
                    handlers[sub or "?"].add(kw.value.id)
                    ids.add(id(kw.value))
    return handlers, ids


def _label(code: Code) -> str:
    return f"{code.module}.{code.cls + '.' if code.cls else ''}{code.name or '<import>'}"


class Run:
    """The project code a command runs, found by walking the source from its entry point.

    What runs: the import-time code of every module that running code imports; a module-level function or
    class that running code names (as a plain name in its own module, by ``from module import name``, or as
    an attribute, ``module.name``); a method of a class in use whose name running code uses as an attribute
    (``x.method``, ``getattr(x, "method")``); a used class's dunder methods, and all its methods if it
    extends a class from outside the project, whose library may call any of them (nn.Module runs forward).
    """

    def __init__(self, module: str, function: str | None = None, subcommand: list[str] | None = None):
        self.modules: dict[str, Module] = {}
        self.code: list[Code] = []  # what runs, in the order found
        self.strings: set[str] = set()  # every string constant in running code
        self.cause: dict[str, str] = {}  # module or function -> the code that made it run, for messages
        self._attrs: set[str] = set()  # attribute names running code uses
        self._names: dict[str, set[str]] = defaultdict(set)  # module -> its global names running code uses
        self._classes: set[tuple[str, str]] = set()  # (module, class) in use
        self._pending: list[Code] = []
        self._done: set[int] = set()
        self._current = "the command"
        self._handlers: dict[str, set[tuple[str, str]]] = defaultdict(set)  # sub-command -> (module, function)
        self._reach(module)
        if function:
            self._name(module, function)
        while True:  # a sub-command's handler runs once its parser exists; unknown: every handler may
            self._drain()
            words = [w for w in (subcommand or []) if w in self._handlers]
            chosen = set().union(*(self._handlers[w] for w in words[-1:])) if words else \
                set().union(*self._handlers.values())
            if all(name in self._names[mod] for mod, name in chosen):
                break
            for mod, name in chosen:
                self._name(mod, name)

    @property
    def files(self) -> set[Path]:
        return {m.path for m in self.modules.values()}

    def why(self, module: str) -> str:
        """The chain of code that makes ``module`` run, for failure messages."""
        chain, seen, at = [module], set(), module
        while at in self.cause and at not in seen:
            seen.add(at)
            at = self.cause[at]
            chain.append(at)
            at = at.removesuffix(".<import>")
        return " <- ".join(chain)

    # -- what runs
    def _reach(self, module: str) -> None:
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            name = ".".join(parts[:i])
            if name in self.modules:
                continue
            mod = load_module(name)
            if mod is None:  # a namespace package, or not a module: nothing of its own runs
                continue
            self.modules[name] = mod
            self.cause.setdefault(name, self._current)
            self._queue(mod.top)
            for g in (self._names[name] | self._attrs) & (set(mod.functions) | set(mod.classes)):
                self._global(mod, g)

    def _queue(self, code: Code) -> None:
        if id(code) not in self._done:
            self._done.add(id(code))
            if code.name:
                self.cause.setdefault(_label(code), self._current)
            self.code.append(code)
            self._pending.append(code)

    def _name(self, module: str, name: str) -> None:
        """A global name of ``module`` used by running code."""
        if name in self._names[module]:
            return
        self._names[module].add(name)
        if module in self.modules:
            self._global(self.modules[module], name)

    def _attr(self, name: str) -> None:
        if name in self._attrs:
            return
        self._attrs.add(name)
        for mod in list(self.modules.values()):
            self._global(mod, name)
            for code in mod.functions.get(name, []):
                if code.cls is not None and (mod.name, code.cls) in self._classes:
                    self._queue(code)

    def _global(self, mod: Module, name: str) -> None:
        for code in mod.functions.get(name, []):
            if code.cls is None:
                self._queue(code)
        if name in mod.classes:
            self._use_class(mod, name)

    def _use_class(self, mod: Module, cname: str) -> None:
        if (mod.name, cname) in self._classes:
            return
        self._classes.add((mod.name, cname))
        project = {c for m in self.modules.values() for c in m.classes} | {"object"}
        external = any(not (isinstance(b, ast.Name) and b.id in project) for b in mod.classes[cname].bases)
        for codes in mod.functions.values():
            for code in codes:
                dunder = code.name.startswith("__") and code.name.endswith("__")
                if code.cls == cname and (external or dunder or code.name in self._attrs):
                    self._queue(code)

    def _drain(self) -> None:
        while self._pending:
            code = self._pending.pop()
            self._current = _label(code)
            handlers, skip = _dispatch(code.nodes)
            docs = {id(n.value) for n in _walk(code.nodes) if isinstance(n, ast.Expr)}  # docstrings, not data
            for k, v in handlers.items():
                self._handlers[k] |= {(code.module, h) for h in v}
            for n in _walk(code.nodes):
                if isinstance(n, (ast.Import, ast.ImportFrom)):
                    self._import(code, n)
                elif isinstance(n, ast.Name) and id(n) not in skip:
                    self._name(code.module, n.id)
                elif isinstance(n, ast.Attribute):
                    self._attr(n.attr)
                elif isinstance(n, ast.Constant) and isinstance(n.value, str):
                    if id(n) not in docs:
                        self.strings.add(n.value)
                    m = MODULE_STRING.match(n.value)
                    if m:  # importlib.import_module("restorevar.train.tokenizer"), "module:function" tables
                        self._reach(m.group(1))
                        if m.group(2):
                            self._name(m.group(1), m.group(2))
                elif (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ATTRIBUTE_CALLS
                      and len(n.args) > 1 and isinstance(n.args[1], ast.Constant)):
                    self._attr(str(n.args[1].value))  # getattr(obj, "validate", None)

    def _import(self, code: Code, n: ast.Import | ast.ImportFrom) -> None:
        if isinstance(n, ast.Import):
            for a in n.names:
                if a.name.split(".")[0] in PACKAGES:
                    self._reach(a.name)
            return
        base = n.module or ""
        if n.level:
            pkg = _package(code.module).split(".")
            base = ".".join(pkg[: len(pkg) - n.level + 1] + ([n.module] if n.module else []))
        if base.split(".")[0] not in PACKAGES:
            return
        self._reach(base)
        for a in n.names:
            if module_file(f"{base}.{a.name}"):
                self._reach(f"{base}.{a.name}")
            else:  # a name a package re-exports is named by the import in its __init__, which runs too
                self._name(base, a.name)


# ------------------------------------------------------------------------------------------------
# dvc.yaml as DVC reads it
# ------------------------------------------------------------------------------------------------
@dataclass
class Stage:
    name: str  # the DVC address: train_tokenizer, ablate@conditioning
    cmd: str
    deps: list[str]
    params: list[str]
    outs: list[str]

    @property
    def group(self) -> str:
        return self.name.split("@")[0]

    @property
    def item(self) -> str | None:
        return self.name.split("@")[1] if "@" in self.name else None


@cache
def stages() -> tuple[Stage, ...]:
    """dvc.yaml's stages resolved by DVC (templating, foreach), in a scratch copy: nothing here is touched."""
    import tempfile

    code = ("import json, sys\nfrom dvc.repo import Repo\nr = Repo.init(sys.argv[1], no_scm=True)\n"
            "print(json.dumps([{'name': s.name, 'cmd': s.cmd, "
            "'deps': [d.def_path for d in s.deps if not hasattr(d, 'params')], "
            "'params': [k for d in s.deps if hasattr(d, 'params') for k in d.params], "
            "'outs': [o.def_path for o in s.outs]} for s in r.index.stages]))")
    with tempfile.TemporaryDirectory() as tmp:
        for f in ("dvc.yaml", "params.yaml", "pretrain/dvc.yaml"):  # the study and the pretraining tier
            (Path(tmp) / f).parent.mkdir(exist_ok=True)
            (Path(tmp) / f).write_bytes((ROOT / f).read_bytes())
        out = subprocess.run([sys.executable, "-c", code, tmp], capture_output=True, text=True, check=True,
                             env={**os.environ, "DVC_NO_ANALYTICS": "1"}).stdout
    return tuple(Stage(**s) for s in json.loads(out.splitlines()[-1]))  # after what `init` prints


def stage_ids() -> list[str]:
    return [s.name for s in stages()]


def entry(stage: Stage) -> tuple[str, str | None, list[str]]:
    """(module, function, sub-command words) that the stage's command runs."""
    argv = shlex.split(stage.cmd.split(">")[0])
    if argv[:2] == ["python", "-m"]:
        return argv[2], None, []
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    if argv[0] in scripts:
        module, function = scripts[argv[0]].split(":")
        words = []
        for a in argv[1:]:
            if a.startswith("-"):
                break
            words.append(a)
        return module, function, words
    raise AssertionError(f"{stage.name}: cannot tell which project code `{stage.cmd}` runs; "
                         "use `python -m pipelines.<stage>` or a console script of pyproject.toml")


@cache
def run_of(stage_name: str) -> Run:
    stage = next(s for s in stages() if s.name == stage_name)
    return Run(*entry(stage))


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def _data_files() -> list[Path]:
    """Files in the packages that code may read: not code, not documentation."""
    return [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc", ".md") and "__pycache__" not in p.parts]


def inert(module: Module) -> bool:
    """A module that only documents itself (a docstring, ``__version__``, ``__all__``): it computes nothing, so
    a stage need not list it."""
    def constant(stmt: ast.stmt) -> bool:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            return True
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) and t.id.startswith("__")
                                                 for t in stmt.targets):
            try:
                ast.literal_eval(stmt.value)
            except ValueError:
                return False
            return True
        return False

    return all(constant(s) for s in ast.parse(module.path.read_text()).body)


def expected_files(stage: Stage) -> set[str]:
    run = run_of(stage.name)
    files = {_rel(m.path) for m in run.modules.values() if not inert(m)}
    # package data the running code names (a manifest it loads, a template it fills)
    files |= {_rel(f) for f in _data_files() if any(f.name in s for s in run.strings)}
    # project files its command line names, unless the stage writes them
    for tok in shlex.split(stage.cmd.replace(">", " > ")):
        if (ROOT / tok).is_file() and not tok.startswith("/") and not _covered(tok, stage.outs):
            files.add(Path(tok).as_posix())
    return files


# ------------------------------------------------------------------------------------------------
# code and data deps
# ------------------------------------------------------------------------------------------------
def missing_deps(stage: Stage) -> list[str]:
    return sorted(f for f in expected_files(stage) if not _covered(f, stage.deps))


def unused_deps(stage: Stage) -> list[str]:
    used = expected_files(stage)
    return [d for d in stage.deps if d.split("/")[0] in PACKAGES and not any(_covered(f, [d]) for f in used)]


def _stage(name: str) -> Stage:
    return next(s for s in stages() if s.name == name)


@pytest.mark.parametrize("name", stage_ids())
def test_stage_lists_every_module_and_data_file_it_runs(name):
    stage = _stage(name)
    missing = missing_deps(stage)
    run = run_of(name)
    why = {f: run.why(f.removesuffix(".py").removesuffix("/__init__").replace("/", ".")) for f in missing}
    assert not missing, f"dvc.yaml stage {name} runs or reads these without listing them in deps: {why}"


@pytest.mark.parametrize("name", stage_ids())
def test_stage_lists_no_code_it_does_not_run(name):
    unused = unused_deps(_stage(name))
    assert not unused, f"dvc.yaml stage {name} lists deps none of whose files it runs or reads: {unused}"


def test_the_deps_checks_can_fail():
    ev = _stage("evaluate")
    without = Stage(ev.name, ev.cmd, [d for d in ev.deps if d != "restorevar/checkpoint.py"], ev.params, ev.outs)
    assert missing_deps(without) == ["restorevar/checkpoint.py"]
    extra = Stage(ev.name, ev.cmd, [*ev.deps, "restorevar/report", "restorevar/train"], ev.params, ev.outs)
    assert unused_deps(extra) == ["restorevar/report"]  # evaluate runs train/common.py: the folder covers it
    oc = _stage("official_compat")
    without = Stage(oc.name, oc.cmd, [d for d in oc.deps if not d.endswith(".json")], oc.params, oc.outs)
    assert missing_deps(without) == ["restorevar/reference/official_state_dict_shapes.json"]


# Prints {module: the project modules that importing it imports}, for each module named in argv. Importing
# them all once first loads the third-party modules they need; then each is imported afresh in a forked
# child that has forgotten every project module, so the slow imports are paid once.
IMPORTED = """
import importlib, json, os, sys, traceback

PROJECT = ("restorevar", "pipelines", "benchmarks")


def imported_by(name):
    r, w = os.pipe()
    if os.fork() == 0:
        try:
            os.close(r)
            for m in [m for m in sys.modules if m.split(".")[0] in PROJECT]:
                del sys.modules[m]
            importlib.import_module(name)
            out = json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in PROJECT))
        except BaseException:
            out = json.dumps(traceback.format_exc())
        finally:
            os.write(w, out.encode())
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.wait()
    return json.loads(out)


for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({name: imported_by(name) for name in sys.argv[1:]}))
"""


def test_the_walk_finds_every_module_python_imports():
    """The walk errs towards more, never fewer: every project module that importing each entry module really
    imports is one it found."""
    entries = sorted({entry(s)[0] for s in stages()})
    out = subprocess.run([sys.executable, "-c", IMPORTED, *entries], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    seen = json.loads(out.splitlines()[-1])
    assert set(seen) == set(entries)
    for name, imported in seen.items():
        assert isinstance(imported, list), f"importing {name} failed: {imported}"
        walked = set(Run(name).modules)
        assert set(imported) <= walked, f"importing {name} imports {sorted(set(imported) - walked)}; the walk missed them"


def test_the_walk_follows_lazy_imports_only_where_they_run(tmp_path, monkeypatch):
    pkg = tmp_path / "restorevar"
    pkg.mkdir()
    for name in ("__init__", "used", "by_method", "by_string", "unused", "unused_method", "other_class"):
        (pkg / f"{name}.py").write_text("")
    (pkg / "entry.py").write_text(
        "TABLE = {'x': 'restorevar.by_string:run'}\n"
        "class Box:\n"
        "    def opened(self):\n        from restorevar import by_method\n"
        "    def closed(self):\n        from restorevar import unused_method\n"
        "class Other:  # never used: its `opened` does not run though Box's does\n"
        "    def opened(self):\n        from restorevar import other_class\n"
        "def main():\n    from restorevar import used\n    Box().opened()\n"
        "def never():\n    from restorevar import unused\n"
        "if __name__ == '__main__':\n    main()\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    load_module.cache_clear()
    try:
        run = Run("restorevar.entry")
    finally:
        load_module.cache_clear()
    assert set(run.modules) == {f"restorevar{m}" for m in ("", ".entry", ".used", ".by_method", ".by_string")}
    assert run.why("restorevar.by_method") == ("restorevar.by_method <- restorevar.entry.Box.opened <- "
                                               "restorevar.entry.main <- restorevar.entry.<import> <- the command")


# ------------------------------------------------------------------------------------------------
# params
# ------------------------------------------------------------------------------------------------
def _is_params_call(v: ast.AST) -> bool:
    return isinstance(v, ast.Call) and (
        (isinstance(v.func, ast.Name) and v.func.id == "Params") or
        (isinstance(v.func, ast.Attribute) and v.func.attr == "Params"))


def _annotated_params(a: ast.arg) -> bool:
    t = a.annotation
    return (isinstance(t, ast.Name) and t.id == "Params") or (
        isinstance(t, ast.Constant) and t.value == "Params") or (
        isinstance(t, ast.Attribute) and t.attr == "Params")


def _params_names(code: Code) -> set[str]:
    """Names that hold a Params in this code: ``p = Params()``, or a parameter annotated ``Params``."""
    names = set()
    for n in _walk(code.nodes):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            names |= {a.arg for a in n.args.args + n.args.kwonlyargs + n.args.posonlyargs if _annotated_params(a)}
        elif isinstance(n, ast.Assign) and _is_params_call(n.value):
            names |= {t.id for t in n.targets if isinstance(t, ast.Name)}
    return names


def params_accesses(run: Run) -> tuple[list[tuple[str, ast.AST | None]], list[str]]:
    """(attribute, subscript or None) of each Params lookup in the code that runs, and the uses of a Params
    this test cannot follow (passed to a function that does not annotate it as Params)."""
    takes_params = {c.name for c in run.code if c.name and any(
        _annotated_params(a) for d in c.nodes if isinstance(d, (ast.FunctionDef, ast.AsyncFunctionDef))
        for a in d.args.args + d.args.kwonlyargs + d.args.posonlyargs)}
    accesses, lost = [], []
    for code in run.code:
        if code.module == "pipelines.params":
            continue  # Params itself: what its lookups read is recorded when the test looks them up
        names = _params_names(code)
        if not names:
            continue
        parents = {id(c): p for p in _walk(code.nodes) for c in ast.iter_child_nodes(p)}
        for n in _walk(code.nodes):
            if not (isinstance(n, ast.Name) and n.id in names and isinstance(n.ctx, ast.Load)):
                continue
            up = parents.get(id(n))
            if isinstance(up, ast.Attribute):
                above = parents.get(id(up))
                sub = above.slice if isinstance(above, ast.Subscript) and above.value is up else None
                accesses.append((up.attr, sub))
            elif isinstance(up, (ast.Call, ast.keyword)):
                call = up if isinstance(up, ast.Call) else parents.get(id(up))
                f = call.func
                callee = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                if callee not in takes_params:
                    lost.append(f"{code.module}.{code.name or '<module>'}: {n.id} passed to {callee}")
            else:
                lost.append(f"{code.module}.{code.name or '<module>'}: {n.id} used as {type(up).__name__}")
    return accesses, lost


def params_read(stage: Stage) -> set[str]:
    """The params.yaml keys the stage reads: its Params lookups, made on a recording Params. A subscript
    that is not a literal is the stage's own name or its foreach item, as in the stages' code."""
    run = run_of(stage.name)
    accesses, lost = params_accesses(run)
    assert not lost, (f"{stage.name}: a Params goes where this test cannot follow it ({lost}); annotate the "
                      "parameter that receives it as `Params`")
    if not any(_is_params_call(n) for c in run.code if c.module != "pipelines.params" for n in _walk(c.nodes)):
        return set()  # reads no params at all
    p = Params(PARAMS)
    for attr, sub in accesses:
        value = getattr(p, attr)
        if sub is None or not hasattr(value, "keys"):
            continue
        keys = [sub.value] if isinstance(sub, ast.Constant) else [stage.group, stage.item]
        for k in keys:
            if k in value:
                value[k]
    return p.reads - set(UNTRACKED)


def _covers(declared: list[str], key: str) -> bool:
    return any(key == d or key.startswith(d + ".") for d in declared)


def missing_params(stage: Stage) -> list[str]:
    return sorted(k for k in params_read(stage) if not _covers(stage.params, k))


def other_profiles_params(stage: Stage) -> list[str]:
    """Listed params that hold other profiles' columns too: a whole section, not ``section.<profile>``."""
    profile = yaml.safe_load(PARAMS.read_text())["profile"]
    return [k for k in stage.params
            if k.split(".")[0] in PROFILE_SECTIONS and not _covers([f"{k.split('.')[0]}.{profile}"], k)]


def unused_params(stage: Stage) -> list[str]:
    # a foreach stage may list what any of its items reads: templating cannot look a section up per item
    read = set().union(*(params_read(s) for s in stages() if s.group == stage.group))
    return [k for k in stage.params if not any(_covers([k], r) or _covers([r], k) for r in read)]


@pytest.mark.parametrize("name", stage_ids())
def test_stage_lists_every_param_it_reads(name):
    missing = missing_params(_stage(name))
    assert not missing, f"dvc.yaml stage {name} reads these params without listing them: {missing}"


@pytest.mark.parametrize("name", stage_ids())
def test_stage_lists_only_its_own_profiles_params_and_only_those_it_reads(name):
    stage = _stage(name)
    other = other_profiles_params(stage)
    assert not other, f"dvc.yaml stage {name} depends on every profile's column of {other}: use section.${{profile}}"
    unused = unused_params(stage)
    assert not unused, f"dvc.yaml stage {name} lists params it never reads: {unused}"


def test_the_params_checks_can_fail():
    ev = _stage("evaluate")
    profile = yaml.safe_load(PARAMS.read_text())["profile"]
    without = Stage(ev.name, ev.cmd, ev.deps, [k for k in ev.params if not k.startswith("evaluate.")], ev.outs)
    assert missing_params(without) == [f"evaluate.{profile}"]
    whole = Stage(ev.name, ev.cmd, ev.deps, [*without.params, "evaluate", "stats.paper", f"bench.{profile}"], ev.outs)
    assert missing_params(whole) == [] and other_profiles_params(whole) == ["evaluate", "stats.paper"]
    assert unused_params(whole) == ["stats.paper", f"bench.{profile}"]
    # a training stage reads its own section through `p.stages[stage]`
    assert missing_params(Stage("train_refiner", "", [], ["profile"], [])) == [
        f"model.{profile}", f"train_refiner.{profile}"]
