"""The library stays pure: no module of restorevar imports Ray, MLflow or DVC, when imported or lazily."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("ray", "mlflow", "dvc")


def library_files() -> list[Path]:
    return sorted(p for p in (ROOT / "restorevar").rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def tool_imports(source: str) -> list[str]:
    """Every statement of ``source`` that imports one of TOOLS, anywhere (inside functions too), by line."""
    found = []
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            names = [n.module or ""] if not n.level else []
        elif (isinstance(n, ast.Call) and n.args and isinstance(n.args[0], ast.Constant)
              and isinstance(n.args[0].value, str)
              and ((isinstance(n.func, ast.Attribute) and n.func.attr == "import_module")
                   or (isinstance(n.func, ast.Name) and n.func.id in ("import_module", "__import__")))):
            names = [n.args[0].value]
        else:
            continue
        found += [(n.lineno, name) for name in names if name.split(".")[0] in TOOLS]
    return [f"line {line}: {name}" for line, name in sorted(found)]


def test_importing_every_library_module_imports_no_orchestration_tool():
    # __main__ runs the command line when imported; the static test below covers it
    modules = [module_name(p) for p in library_files() if p.name != "__main__.py"]
    assert len(modules) > 50 and "restorevar.cli" in modules and "restorevar.imaging" in modules
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {TOOLS!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_no_library_file_imports_an_orchestration_tool_anywhere():
    found = {str(p.relative_to(ROOT)): hits for p in library_files() if (hits := tool_imports(p.read_text()))}
    assert not found, f"restorevar/ must not import ray, mlflow or dvc (pipelines/ does): {found}"


def test_the_static_check_sees_lazy_and_dynamic_imports():
    source = ("import os\nfrom raytracer import x\n"
              "def f():\n    import ray.tune\n"
              "def g():\n    from mlflow.tracking import MlflowClient\n"
              "def h():\n    return importlib.import_module('dvc.api')\n")
    assert tool_imports(source) == ["line 4: ray.tune", "line 6: mlflow.tracking", "line 8: dvc.api"]
