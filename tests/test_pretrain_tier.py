"""The pretraining tier lives in pretrain/pipeline.yaml, which DVC does not read, so a plain `dvc status` or
`dvc repro` of a fresh clone leaves it alone; `make pretrain` (pipelines.pretrain_tier) puts it in place as
pretrain/dvc.yaml for its own run only."""
import os
import subprocess
import sys
from pathlib import Path

from pipelines import pretrain_tier
from pipelines.params_yaml import ROOT


def test_a_plain_dvc_status_names_no_pretraining_stage():
    assert not pretrain_tier.AS_DVC.exists()  # only a run of the tier puts it there
    dvc = Path(sys.executable).with_name("dvc")
    out = subprocess.run([str(dvc), "status"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
                         env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert out.returncode == 0, out.stderr
    listed = [line for line in out.stdout.splitlines() if line and not line[0].isspace()]
    assert listed and not [line for line in listed if "pretrain" in line], listed  # the study's stages only


def test_the_run_reads_the_tier_as_dvc_yaml_and_leaves_no_copy(tmp_path):
    tier, as_dvc = tmp_path / "pipeline.yaml", tmp_path / "dvc.yaml"
    tier.write_bytes(pretrain_tier.TIER.read_bytes())
    probe = (f"import sys; from pathlib import Path; same = Path({str(as_dvc)!r}).read_bytes() == "
             f"Path({str(tier)!r}).read_bytes(); sys.exit(3 if same else 1)")
    assert pretrain_tier.run_tier([sys.executable, "-c", probe], tier, as_dvc) == 3  # DVC's own exit code passes on
    assert not as_dvc.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["pipeline.yaml"]
    as_dvc.write_text("left by a run killed outright")
    assert pretrain_tier.run_tier([sys.executable, "-c", probe], tier, as_dvc) == 3  # replaced, then removed
    assert not as_dvc.exists()


def test_ctrl_c_during_the_run_removes_the_copy_and_exits_130(tmp_path, monkeypatch, capsys):
    tier, as_dvc = tmp_path / "pipeline.yaml", tmp_path / "dvc.yaml"
    tier.write_text("stages: {}\n")

    def interrupted(command, cwd):
        assert as_dvc.read_text() == "stages: {}\n"
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_tier.subprocess, "call", interrupted)
    assert pretrain_tier.run_tier(["dvc", "repro"], tier, as_dvc) == 130
    assert not as_dvc.exists() and tier.read_text() == "stages: {}\n"
    assert capsys.readouterr().err == "pretrain_tier: interrupted\n"
