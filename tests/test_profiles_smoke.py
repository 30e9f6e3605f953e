"""The researchers' path on CPU: `dvc repro` on the `small` and `paper` profiles, every stage at 2 steps with a
reduced batch, on fake dataset trees with the real layouts and typical real image sizes (600x400 LOLv1,
1280x720 GoPro, 2708x1800 REVIDE, ...).

`paper` starts from official-shaped VAR weights, made from the shipped shape manifest and converted with
`restorevar convert-official`. The published files' digests cannot be matched offline, so the stages take
the converted checkpoint as a path here, where a real run names `var` / `var_d16` and reads the verified
cache (that loader has its own tests in test_convert.py). To fit a CPU test, the paper model runs at 64 px
(the same weights: only positions and the number of scales depend on the size; its 512 px data path has a
test in test_params.py), and of the ablation families only `refiner` runs: every trial of the full-size
transformer writes a checkpoint of several GB (the `small` run covers every family). Each project is
deleted afterwards.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from fake_datasets import build_all

from benchmarks.tiny_run import copy_project, env, repro, tool

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                                 reason="needs the project's git checkout to copy its files")]
SMALL_SIZE = ["vqvae.image_size=64", "vqvae.patch_nums=[1,2,3,4]"]


def _shrink(raw: dict, profile: str) -> None:
    """Every stage of ``profile`` at 2 steps, batch 2, one CPU, no GPU; everything else as the profile has it."""
    raw["profile"] = profile
    for stage in ("train_tokenizer", "finetune_decoder", "train_transformer", "train_refiner", "train_promptir"):
        sec = raw[stage][profile]
        accum = sec["loop"].get("grad_accum", 1)
        sec["loop"].update(steps=2, batch_size=2, grad_accum=min(accum, 2), ckpt_every=2, log_every=1, eval_every=2,
                           val_batches=1)
        sec["data"]["num_workers"] = 1  # workers still build the batches
        sec.setdefault("tune", {})["resources"] = {"cpu": 2, "gpu": 0}  # one trial at a time: memory
    raw["finetune_decoder"][profile].update(discriminator_start=1, perceptual_required=False)  # no LPIPS offline
    raw["train_promptir"][profile]["loop"]["warmup_steps"] = 1
    raw["train_promptir"][profile]["tune"]["seeds"] = [0]  # the seeds' code paths are the tiny study's
    raw["data"][profile] = {**raw["data"][profile], "allow_download": False}
    ev = raw["evaluate"][profile] = dict(raw["evaluate"][profile])
    ev.update(batch_size=2, samples_per_degradation=1, cost={"batch_size": 1, "warmup": 0, "repeats": 1})
    raw["bench"][profile] = {**raw["bench"][profile], "batch_sizes": [1], "warmup": 0, "repeats": 1,
                             "agreement_images": 1, "train_batch_size": 1, "train_steps": 1}
    raw["stats"][profile] = {**raw["stats"][profile], "n_boot": 100, "n_perm": 200}
    abl = raw["ablations"][profile] = json.loads(json.dumps(raw["ablations"][profile]))
    for fam in abl["families"].values():
        fam["loop"] = {"steps": 2, "eval_every": 2, "ckpt_every": 2, "log_every": 1}
        if "pretrain" in fam:
            fam["pretrain"]["loop"] = {"steps": 2, "eval_every": 2, "ckpt_every": 2, "log_every": 1}
        fam["variants"].get("discriminator", {}).get("set", {}).update(discriminator_start=1)
        keep = [fam["paper_choice"], *[v for v in fam["variants"] if v != fam["paper_choice"]][:1]]
        fam["variants"] = {v: fam["variants"][v] for v in keep}  # the paper's choice and one other: every code path
    abl["scale_space"] = {"split": 3, "images_per_degradation": 1, "grid_images": 1}
    # one seed: a `small` trial's checkpoint is hundreds of MB, and the seeds' code paths are the tiny study's
    abl["seeds"] = abl["seeds"][:1]


def _var_init(project: Path, overrides: list[str]) -> Path:
    """VAR's two published files as they are shaped (the shipped manifest), seeded values, then converted."""
    shapes = json.loads((ROOT / "restorevar" / "reference" / "official_state_dict_shapes.json").read_text())
    g = torch.Generator().manual_seed(0)
    for name in ("vae_ch160v4096z32", "var_d16"):
        sd = {k: (torch.randn(s, generator=g) * 0.02 if len(s) > 1 else torch.zeros(s))
              for k, s in shapes["checkpoints"][name].items()}
        for k, v in list(sd.items()):  # norms start at one, as a trained file's would be near
            if k.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm_out.weight")):
                sd[k] = torch.ones_like(v)
        torch.save(sd, project / f"{name}.pth")
    out = project / "checkpoints" / "var_init.pt"
    sets = [a for o in overrides for a in ("--set", o)]
    cmd = [tool("restorevar"), "convert-official", "--preset", "paper", *sets,
           "--vae", str(project / "vae_ch160v4096z32.pth"), "--var", str(project / "var_d16.pth"), "--out", str(out)]
    r = subprocess.run(cmd, cwd=project, env=env(), capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


HEAVY = pytest.mark.skipif(
    os.environ.get("RESTOREVAR_HEAVY") != "1",
    reason="the paper-size run writes checkpoints of several GB each (tens of GB in all) and takes ~10 min on 2 "
           "cores: run it with RESTOREVAR_HEAVY=1")


@pytest.fixture(scope="module", params=["small", pytest.param("paper", marks=HEAVY)])
def study(request, tmp_path_factory):
    profile = request.param
    project = tmp_path_factory.mktemp(profile)
    copy_project(project, lambda raw: _shrink(raw, profile))
    raw = yaml.safe_load((project / "params.yaml").read_text())
    build_all(project / raw["data"][profile]["root"], raw["data"][profile]["datasets"], real=True)
    if profile == "paper":
        raw["model"]["paper"]["overrides"] = {"vqvae": {"image_size": 64, "patch_nums": [1, 2, 3, 4]}}  # SMALL_SIZE
        init = str(_var_init(project, SMALL_SIZE))
        raw["train_tokenizer"]["paper"]["init_from"] = init  # frozen: VAR's VAE exported as it came
        raw["train_transformer"]["paper"]["init_from"] = init
        for stage in ("train_tokenizer", "finetune_decoder", "train_transformer", "train_refiner"):
            raw[stage]["paper"]["data"].update(crop=64, resize_shorter=72)
        raw["ablation_families"] = ["refiner"]
        (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        r = repro(project, timeout=3000)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-6000:]
        yield {"profile": profile, "project": project, "output": out, "raw": raw}
    finally:
        shutil.rmtree(project, ignore_errors=True)  # the paper run's checkpoints hold tens of GB


def test_every_stage_runs_and_the_report_has_tables_1_and_2(study):
    project, out = study["project"], study["output"]
    ablations = [f"ablate@{f}" for f in study["raw"]["ablation_families"]]
    for stage in ("data", "train_tokenizer", "finetune_decoder", "train_transformer", "train_refiner", "train_promptir",
                  "evaluate", "bench", "stats", *ablations, "scale_space", "report"):
        assert f"Running stage '{stage}'" in out, stage
    info = json.loads((project / "results" / "evaluation.json").read_text())
    roles = info["dataset_roles"]
    assert {d for d, r in roles.items() if r == "aior"} == {"RESIDE", "Rain13K", "Snow100K", "LOLv1", "GoPro"}
    assert {d for d, r in roles.items() if r == "generalization"} == {"LHP", "REVIDE", "TOLED", "POLED", "CDD",
                                                                       "LOLBlur"}
    md = (project / "reports" / "report.md").read_text()
    assert "Restoration quality (paper Table 1)" in md and "paper Table 2" in md
    if study["profile"] == "paper":
        from restorevar.checkpoint import load_checkpoint

        assert info["protocol"]["id"].endswith("-official")  # the official evaluation's SSIM convention
        init = load_checkpoint(project / "checkpoints" / "var_init.pt")["components"]
        tok = load_checkpoint(project / "checkpoints" / "train_tokenizer.pt")["components"]["vqvae"]
        assert all(torch.equal(tok[k], v) for k, v in init["vqvae"].items())  # frozen: VAR's VAE, unchanged


def test_validation_covers_every_training_dataset_and_ids_are_unique(study):
    from restorevar.data.manifest import check_manifest

    project = study["project"]
    entries, problems = check_manifest(project / "data" / "prepared" / "test.json", allow_outside_root=True)
    assert problems == [], [str(p) for p in problems]  # GoPro frames and the Rain13K sets repeat file names
    assert len({(e.dataset, e.id) for e in entries}) == len(entries)
    written = json.loads((project / "data" / "prepared" / "train.json").read_text())
    assert {e["degradation"] for e in written} == {"Haze", "Rain", "Snow", "Low-light", "Motion blur"}
