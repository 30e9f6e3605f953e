"""The library stays pure: importing every part of restorevar pulls in none of Ray, MLflow or DVC."""
import subprocess
import sys


def test_library_never_imports_orchestration_tools():
    code = ("import sys, restorevar.cli, restorevar.train.tokenizer, restorevar.train.decoder, "
            "restorevar.train.transformer, restorevar.train.refiner, restorevar.train.samples, restorevar.inference, "
            "restorevar.data.registry, restorevar.data.weights; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow', 'dvc')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
