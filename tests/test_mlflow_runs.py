"""What ties an MLflow run to its inputs: the commit, uncommitted changes to inputs, params and data hashes."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from pipelines.mlflow_runs import git_state, provenance, stratum_names

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _repo(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    (tmp_path / "reports").mkdir()
    for name, text in (("params.yaml", "lr: 1\n"), ("code.py", "x = 1\n"), ("reports/report.md", "old\n"),
                       ("metrics.json", "{}\n")):
        (tmp_path / name).write_text(text)
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "c"]):
        subprocess.run(git + cmd, cwd=tmp_path, check=True, capture_output=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_study_id_follows_commit_inputs_and_params_but_not_the_regenerated_report(tmp_path):
    head = _repo(tmp_path)
    clean = provenance(tmp_path, tmp_path / "params.yaml", data=tmp_path / "code.py")
    assert clean["git_commit"] == head and "git_diff_sha256" not in clean and len(clean["data_sha256"]) == 16
    (tmp_path / "reports" / "report.md").write_text("new numbers\n")  # what a study run writes
    (tmp_path / "metrics.json").write_text('{"psnr": 12.5}\n')
    assert provenance(tmp_path, tmp_path / "params.yaml")["git_commit"] == head  # results, not inputs
    assert provenance(tmp_path, tmp_path / "params.yaml")["study"] == clean["study"]
    (tmp_path / "code.py").write_text("x = 2\n")  # an uncommitted change to an input
    dirty = provenance(tmp_path, tmp_path / "params.yaml")
    assert dirty["git_commit"] == head + "-dirty" and dirty["study"] != clean["study"]
    (tmp_path / "code.py").write_text("x = 3\n")
    assert provenance(tmp_path, tmp_path / "params.yaml")["git_diff_sha256"] != dirty["git_diff_sha256"]
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "params.yaml").write_text("lr: 2\n")  # uncommitted params count too, through their own hash
    moved = provenance(tmp_path, tmp_path / "params.yaml")
    assert moved["params_sha256"] != clean["params_sha256"] and moved["study"] != clean["study"]


def test_outside_a_checkout_the_commit_is_none(tmp_path):
    (tmp_path / "params.yaml").write_text("lr: 1\n")
    assert git_state(tmp_path) == ("none", "")
    assert provenance(tmp_path, tmp_path / "params.yaml", missing=tmp_path / "nope.json")["missing_sha256"] == "missing"


def test_stratum_names_use_the_dataset_unless_it_holds_several_degradations():
    assert stratum_names(["RESIDE/haze", "mix/rain", "mix/snow"]) == {
        "RESIDE/haze": "RESIDE", "mix/rain": "mix-rain", "mix/snow": "mix-snow"}


def test_a_retrained_upstream_checkpoint_gives_its_downstream_stage_a_new_experiment(tmp_path):
    from pipelines.training_stage import upstream_digests

    ck = tmp_path / "train_transformer.pt"
    ck.write_bytes(b"weights 1")
    cfg = {"transformer_checkpoint": str(ck), "init_from": "pretrained", "loop": {"lr": 1e-3}}
    first = upstream_digests([cfg])
    assert list(first) == [str(ck)]  # "pretrained" names no file
    ck.write_bytes(b"weights 2")
    assert upstream_digests([cfg]) != first and upstream_digests([{"loop": {}}]) == {}


def test_a_trial_names_project_files_relative_to_the_project_and_other_paths_as_given():
    from pipelines.params import ROOT
    from pipelines.training_stage import _rooted

    cfg = {"data": {"train_manifest": str(ROOT / "data" / "prepared" / "train.json"), "crop": 32},
           "init_from": "/elsewhere/var_d16.pth", "tokenizer_checkpoint": str(ROOT / "checkpoints" / "t.pt"),
           "model": {"overrides": ["transformer.depth=2"]}, "note": "sqlite:////x/mlflow.db"}
    assert _rooted(cfg) == {"data": {"train_manifest": "data/prepared/train.json", "crop": 32},
                            "init_from": "/elsewhere/var_d16.pth", "tokenizer_checkpoint": "checkpoints/t.pt",
                            "model": {"overrides": ["transformer.depth=2"]}, "note": "sqlite:////x/mlflow.db"}
    assert _rooted(None) is None
