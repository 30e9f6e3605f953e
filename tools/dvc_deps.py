"""The deps and params lists of ``dvc.yaml`` and ``pretrain/pipeline.yaml``, written from what each stage runs and reads.

    python -m tools.dvc_deps --write   # rewrite the lists in place
    python -m tools.dvc_deps --check   # exit 1, naming each stale stage (``make lint`` and the tests run this)

Nobody edits these lists by hand: a stage's lists are derived from its command, so `dvc repro` never keeps a
result made by other code or other params, and a stage never re-runs for code or params it does not use.

- code: the project modules its command runs (``python -m pipelines.X``; ``restorevar SUB``, the console
  script, runs restorevar.cli with the handler of SUB). They come from a walk over the source (``Run``): a
  module's import-time code runs, and so does every function that code (or other code that runs) names,
  with the imports inside it, lazy ones too. A method is matched by its name on any object, not by type,
  so the walk can only err towards more modules, never fewer; tests/test_dvc_deps.py checks it against what
  Python itself imports. Modules that only document themselves (a docstring, ``__version__``) are not listed.
  A sub-folder of a package is listed whole where the stage uses at least half of its files, else file by file.
- data files: the project files named on its command line, and the data files in the packages that the
  code that runs names.
- params: the ``Params`` attributes that the code which runs reads, looked up on a ``Params`` that records
  which params.yaml entries each lookup reads (``pipelines.params.Params.reads``), keyed by the profile
  (``evaluate.${profile}``), so that editing another profile's column re-runs nothing. A ``foreach`` stage
  lists what any of its items reads: templating cannot look a section up per item.

Deps outside the packages (other stages' outputs, data folders) are kept as they are.
"""
from __future__ import annotations

import argparse
import ast
import io
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

import yaml

from pipelines.params import PARAMS, Params
from pipelines.params_schema import PROFILE_SECTIONS, UNTRACKED

# the study and the pretraining tier, each with the name DVC reads it under (`make pretrain` puts the tier's
# file in place as pretrain/dvc.yaml for its run only, so that a plain `dvc repro` or `dvc status` never sees it)
DVC_FILES = {"dvc.yaml": "dvc.yaml", "pretrain/pipeline.yaml": "pretrain/dvc.yaml"}


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
        for f, as_read in {"params.yaml": "params.yaml", **DVC_FILES}.items():
            (Path(tmp) / as_read).parent.mkdir(exist_ok=True)
            (Path(tmp) / as_read).write_bytes((ROOT / f).read_bytes())
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
    the walk cannot follow (passed to a function that does not annotate it as Params)."""
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
    if lost:
        raise Untraceable(f"{stage.name}: a Params goes where the walk cannot follow it ({lost}); annotate the "
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



class Untraceable(Exception):
    """A stage's code hands its Params somewhere the walk cannot follow."""


# ------------------------------------------------------------------------------------------------
# the lists, written
# ------------------------------------------------------------------------------------------------
def _counted(p: Path) -> bool:
    """A file a stage can use: a module that computes something, or package data (not docs, not bytecode)."""
    if "__pycache__" in p.parts or p.suffix in (".pyc", ".md"):
        return False
    if p.suffix == ".py":
        name = _rel(p).removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        mod = load_module(name)
        return mod is not None and not inert(mod)
    return True


def code_deps(files: set[str]) -> list[str]:
    """``files`` as deps: a package's sub-folder whole where at least half of its files are used, else the files."""
    out: set[str] = set()
    by_folder: dict[str, set[str]] = defaultdict(set)
    for f in files:
        parts = f.split("/")
        if len(parts) > 2 and parts[0] in PACKAGES:
            by_folder["/".join(parts[:2])].add(f)
        else:
            out.add(f)
    for folder, used in by_folder.items():
        there = [p for p in (ROOT / folder).rglob("*") if p.is_file() and _counted(p)]
        out |= {folder} if 2 * len(used) >= len(there) else used
    return sorted(out)


def _is_code(dep: str) -> bool:
    return dep.split("/")[0] in PACKAGES


def _templated(key: str, profile: str) -> str:
    section, _, rest = key.partition(".")
    if rest == profile or rest.startswith(profile + "."):
        return f"{section}.${{profile}}{rest[len(profile):]}"
    return key


def _keep_order(old: list[str], new: list[str]) -> list[str]:
    return list(old) if sorted(old) == sorted(new) else new


def wanted(group: str, old_deps: list[str], old_params: list[str]) -> tuple[list[str], list[str]]:
    """The deps and params lists that stage ``group`` (every item of a foreach) should have."""
    items = [s for s in stages() if s.group == group]
    used = set().union(*(expected_files(s) for s in items))
    code = _keep_order([d for d in old_deps if _is_code(d)], code_deps(used))
    deps = [d for d in old_deps if not _is_code(d)] + code
    profile = yaml.safe_load(PARAMS.read_text())["profile"]
    read = sorted({_templated(k, profile) for s in items for k in params_read(s)}, key=lambda k: (k != "profile", k))
    return deps, _keep_order(old_params, read)


def _yaml():
    from ruamel.yaml import YAML  # DVC's own YAML library: a round trip keeps the comments

    y = YAML()
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096
    return y


def rewritten(path: Path) -> tuple[str, list[str]]:
    """``path``'s text with every stage's lists as ``wanted`` gives them, and the stages that changed."""
    y = _yaml()
    doc = y.load(path.read_text())
    changed = []
    for group, body in doc["stages"].items():
        stage = body.get("do", body)  # a foreach stage's template
        old_deps = [str(d) for d in stage.get("deps", [])]
        holder, key_p = stage, "params"
        listed = stage.get("params", [])
        if len(listed) == 1 and hasattr(listed[0], "keys"):  # `- params.yaml: [...]`, the file named
            holder, key_p = listed[0], next(iter(listed[0]))
        old_params = [str(p) for p in holder.get(key_p, [])]
        deps, params = wanted(group, old_deps, old_params)
        for where, key, old, new in ((stage, "deps", old_deps, deps), (holder, key_p, old_params, params)):
            if old == new:
                continue
            label = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
            changed.append(f"{label}:{group} {'deps' if key == 'deps' else 'params'}")
            if new and key in where:
                seq = where[key]
                after_last = seq.ca.items.pop(len(seq) - 1, None)  # a comment below the list hangs on its end
                seq.ca.items.clear()
                seq[:] = new
                if after_last is not None:
                    seq.ca.items[len(seq) - 1] = after_last
            elif new:
                where[key] = new
            else:
                del where[key]
    out = io.StringIO()
    y.dump(doc, out)
    return out.getvalue(), changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the lists in place")
    mode.add_argument("--check", action="store_true", help="exit 1 when a list is stale")
    args = ap.parse_args(argv)
    try:
        results = {f: rewritten(ROOT / f) for f in DVC_FILES}
    except Untraceable as e:
        print(f"dvc_deps: error: {e}", file=sys.stderr)
        return 2
    stale = [c for _, changed in results.values() for c in changed]
    if args.check:
        if stale:
            print(f"dvc_deps: stale lists: {', '.join(stale)}; run `python -m tools.dvc_deps --write`", file=sys.stderr)
            return 1
        print("dvc_deps: every stage's deps and params are what it runs and reads")
        return 0
    for f, (text, changed) in results.items():
        if changed:
            tmp = (ROOT / f).with_name(f".{Path(f).name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, ROOT / f)
    print(f"dvc_deps: rewrote {', '.join(stale)}" if stale else "dvc_deps: nothing to rewrite")
    return 0


if __name__ == "__main__":
    sys.exit(main())
