"""dvc.yaml (and pretrain/pipeline.yaml) declares what every stage runs and reads, so `dvc repro` never reuses a result
made by other code, other data or other params, and declares no code or params that the stage does not use.

The lists are written by ``python -m tools.dvc_deps --write`` from a walk over the source (its docstring says
how); here the files must be what the writer writes, every stage (as DVC itself expands it, ``foreach``
included) is checked both ways against the walk, and the walk is checked against what Python itself imports.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from pipelines.params import PARAMS
from tools import dvc_deps
from tools.dvc_deps import (
    DVC_FILES,
    ROOT,
    Run,
    Stage,
    entry,
    load_module,
    missing_deps,
    missing_params,
    other_profiles_params,
    rewritten,
    run_of,
    stage_ids,
    stages,
    unused_deps,
    unused_params,
)


def _stage(name: str) -> Stage:
    return next(s for s in stages() if s.name == name)


# ------------------------------------------------------------------------------------------------
# the lists are the writer's
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", DVC_FILES)
def test_the_lists_are_what_the_writer_writes(path):
    text, changed = rewritten(ROOT / path)
    assert not changed, f"{path}: stale lists {changed}; run `python -m tools.dvc_deps --write`"
    assert text == (ROOT / path).read_text(), f"{path}: run `python -m tools.dvc_deps --write`"


def test_the_writer_puts_back_a_dropped_dep_and_drops_an_unused_one(tmp_path):
    text = (ROOT / "dvc.yaml").read_text()
    ev = _stage("evaluate")
    dropped = next(d for d in ev.deps if d.endswith(".py") and d.startswith("restorevar/"))
    at = text.index("\n  evaluate:\n")  # within evaluate's own lists
    stale = text[:at] + text[at:].replace(f"      - {dropped}\n", "      - restorevar/report\n", 1)
    assert stale != text
    (tmp_path / "dvc.yaml").write_text(stale)
    out, changed = rewritten(tmp_path / "dvc.yaml")
    assert changed == ["dvc.yaml:evaluate deps"] and out == text


def test_the_check_fails_on_a_stale_list(monkeypatch, capsys):
    monkeypatch.setattr(dvc_deps, "rewritten", lambda path: (path.read_text(), [f"{path.name}:evaluate deps"]))
    assert dvc_deps.main(["--check"]) == 1
    assert "tools.dvc_deps --write" in capsys.readouterr().err


def test_a_folder_is_listed_whole_only_where_most_of_it_is_used():
    train = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "restorevar/train").glob("*.py")
                   if p.name != "__init__.py")
    assert dvc_deps.code_deps(set(train)) == ["restorevar/train"]
    assert dvc_deps.code_deps({train[0], "pipelines/data.py"}) == sorted([train[0], "pipelines/data.py"])


# ------------------------------------------------------------------------------------------------
# every stage, both ways
# ------------------------------------------------------------------------------------------------
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
    assert unused_deps(extra) == ["restorevar/report", "restorevar/train"]
    oc = _stage("official_compat")
    without = Stage(oc.name, oc.cmd, [d for d in oc.deps if d != "restorevar/reference"], oc.params, oc.outs)
    # the convert-official command also names PromptIR's shapes (its --promptir path), so both files are its deps
    assert missing_deps(without) == ["restorevar/reference/official_state_dict_shapes.json",
                                     "restorevar/reference/promptir_official_state_dict_shapes.json"]


def test_evaluation_and_restoring_run_no_training_code():
    """The device choice, the model reference and the condition's parameter names live beside the models, so
    evaluating and restoring never run the trainers' module."""
    for entry_module, function, words in (("pipelines.evaluate", None, []), ("restorevar.cli", "main", ["restore"])):
        walked = Run(entry_module, function, words).modules
        assert not [m for m in walked if m.startswith("restorevar.train")], (entry_module, words)



def test_the_cli_runs_nothing_from_outside_the_package():
    walked = Run("restorevar.cli", "main").modules  # every sub-command
    assert walked and all(m.split(".")[0] == "restorevar" for m in walked), sorted(walked)


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
    monkeypatch.setattr(dvc_deps, "ROOT", tmp_path)
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
