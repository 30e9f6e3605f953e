"""What the repository holds as committed files: no path of the machine that made them, and the README and the
report quoting the committed study (metrics.json), not an older one."""
import json
import re
import shutil
import subprocess

import pytest

from pipelines.params_yaml import ROOT

# an absolute path into somebody's checkout or home; /tmp paths in tests are deliberate fixtures
MACHINE_PATH = re.compile(r"(?<![\w./])/(?:home|Users|work|root)/[\w.-]+")


def _tracked() -> list[str]:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60)
    return [p for p in out.stdout.decode().split("\0") if p]


def test_no_tracked_file_holds_a_path_of_the_machine_that_made_it():
    found = []
    for name in _tracked():
        path = ROOT / name
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # weights, pictures, parquet: not text
            continue
        if str(ROOT) in text:
            found.append(f"{name}: {ROOT}")
        found += [f"{name}: {m.group()}" for m in MACHINE_PATH.finditer(text)]
    assert not found, found[:10]


def test_the_report_and_the_readme_quote_the_committed_metrics():
    metrics = json.loads((ROOT / "metrics.json").read_text())
    [protocol] = [k for k in metrics if k != "cost"]  # one protocol per study, beside the cost figures
    restored, identity = (metrics[protocol][m]["overall"]["psnr"] for m in ("restorevar", "identity"))
    report = (ROOT / "reports" / "report.md").read_text()
    pooled = re.search(r"\| all \(pooled\)\s*\|\s*\d+\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", report)
    assert pooled and pooled.groups() == (f"{restored:.3f}", f"{identity:.3f}"), "report.md is another study's"
    weighted = re.search(r"\| all \(dataset-weighted\)\s*\|\s*\d+\s*\|[^|]*\|[^|]*\|\s*([-\d.]+)\s*\|[^|]*\|\s*"
                         r"\[([-\d.]+), ([-\d.]+)\]", report)
    diff, lo, hi = (float(g) for g in weighted.groups())
    readme = (ROOT / "README.md").read_text()
    row = f"| average (dataset-weighted) | {identity:.2f} | {restored:.2f} | {diff:+.2f} [{lo:+.2f}, {hi:+.2f}] |"
    assert row in readme, f"the README's measured section does not quote the committed study: {row}"
    seeds = sorted(k for k in metrics[protocol] if k.startswith("promptir_seed"))
    assert seeds, "the committed study holds no retrained PromptIR"
    base = " | ".join(f"{metrics[protocol][k]['overall']['psnr']:.2f}" for k in seeds)
    row = f"| average (dataset-weighted) | {identity:.2f} | {restored:.2f} | {base} |"
    assert row in readme, f"the README's comparison with PromptIR does not quote the committed study: {row}"
