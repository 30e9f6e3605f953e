"""params.yaml is checked completely before any work starts; errors name the key. A stage reads only its own
profile's entries of the sections it uses."""
import copy
import re

import pytest
import yaml

from pipelines.params import PARAMS, Params, check_all
from restorevar.errors import UserError

RAW = yaml.safe_load(PARAMS.read_text())


def _write(tmp_path, edit):
    raw = copy.deepcopy(RAW)
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _params(tmp_path, edit):
    return Params(_write(tmp_path, edit)).check_profile()


@pytest.mark.parametrize("profile", RAW["profiles"])
def test_every_shipped_profile_validates(profile, tmp_path):
    p = _params(tmp_path, lambda r: r.update(profile=profile))
    assert p.profile == profile and set(p.stages) == {"pretrain_tokenizer", "pretrain_prior", "pretrain_restoration",
                                                      "train_tokenizer",
                                                      "finetune_decoder", "train_transformer", "train_refiner"}
    assert p.stages["train_transformer"].config.model.preset == p.model.preset


def test_default_profile_is_the_offline_cpu_one():
    p = Params()
    assert RAW["profile"] == "default" and p.model.preset == "cpu" and p.data.source == "synth"
    assert all(s.tune.resources.gpu == 0 for s in p.stages.values())


@pytest.mark.parametrize("profile", ["small", "paper"])
def test_real_data_profiles_resize_and_crop_as_the_official_code(profile, tmp_path):
    """Short side to 1.125 x crop (Lanczos), a random crop, no flip: a 600x400 LOLv1 image must not be refused."""
    from PIL import Image

    from restorevar.data.dataset import PairedDataset, PairedTransform

    p = _params(tmp_path, lambda r: r.update(profile=profile))
    for name in ("train_tokenizer", "finetune_decoder", "train_transformer", "train_refiner"):
        d = p.stages[name].config.data
        assert d.pairs == "manifest" and d.resize_shorter == round(1.125 * d.crop) and not d.hflip, name
    d = p.stages["train_transformer"].config.data
    for name in ("low.png", "high.png"):
        Image.new("RGB", (600, 400), (40, 80, 120)).save(tmp_path / name)
    (tmp_path / "m.json").write_text('[{"image_path": "low.png", "target_path": "high.png", '
                                     '"degradation": "Low-light", "dataset": "LOLv1"}]')
    t = PairedTransform(crop=d.crop, resize_shorter=d.resize_shorter, hflip=d.hflip, mode="train")
    item = PairedDataset(tmp_path / "m.json", t).item(0)
    assert item["clean"].shape == (3, d.crop, d.crop)


def test_small_profile_trains_variants_and_exports_the_best(tmp_path):
    p = _params(tmp_path, lambda r: r.update(profile="small"))
    st = p.stages["train_transformer"]
    assert set(st.variants) == {"lr3e-4", "lr1e-4"} and st.tune.metric == "val_acc"
    assert st.variants["lr1e-4"]["loop"]["lr"] == 1e-4


def _center_crop_of_small_images(raw):
    """32 px synthetic images (crops to match) for the 64 px model, tested by cropping, not resizing."""
    raw["evaluate"]["default"]["protocol"]["geometry"] = "center_crop"
    raw["data"]["default"]["size"] = 32
    for stage in ("train_tokenizer", "finetune_decoder", "train_transformer", "train_refiner"):
        raw[stage]["default"]["data"]["crop"] = 32


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["train_tokenizer"]["default"]["loop"].update(stepz=3), "stepz"),
    (lambda r: r["train_tokenizer"]["default"]["loop"].update(steps="ten"), "train_tokenizer.default.loop.steps"),
    (lambda r: r["finetune_decoder"]["default"].update(discriminator="yes please"), "discriminator"),
    (lambda r: r.update(profile="huge"), "huge"),
    (lambda r: r["model"]["default"].update(preset="enormous"), "enormous"),
    (lambda r: r["model"]["default"].update(overrides=["transformer.depht=3"]), "depht"),
    (lambda r: r["data"]["default"].update(source="ftp"), "ftp"),
    (lambda r: r["data"]["default"].update(source="datasets"), "datasets"),
    (lambda r: r["train_refiner"].pop("default"), "train_refiner"),
    (lambda r: r["tracking"].update(mlflow="x"), "tracking.mlflow"),
    (lambda r: r["train_transformer"]["default"].update(
        tune={"variants": {"a": {"loop.lr": 0.1}, "b": {"loop.lr": 0.2}}}), "metric or a chosen"),
    (lambda r: r["train_transformer"]["default"].update(
        tune={"variants": {"a": {"loop.stepz": 1}}, "chosen": "a"}), "variants.a"),
    (lambda r: r["train_transformer"]["default"].update(tune={"variants": {"a": {}}, "chosen": "b"}), "'b'"),
    (lambda r: r["train_transformer"]["default"].update(tune={"resources": {"gpus": 1}}), "gpus"),
    (lambda r: r["train_transformer"]["default"].update(tune={"workers": 0}), "default.tune.workers must be at least 1"),
    (lambda r: r["train_transformer"]["default"]["loop"].update(batch_size=8) or r["train_transformer"]["default"].update(
        tune={"workers": 3}), "tune.workers=3 must divide the batch size 8 of variant main"),
    (lambda r: r["evaluate"]["default"].update(metrics=["psnr", "fid"]), "evaluate.default.metrics: unknown metric 'fid'"),
    (lambda r: r["evaluate"]["default"].update(metrics="psnr"), "evaluate.default.metrics: expected a list"),
    (lambda r: r["evaluate"]["default"].update(baselines=["bicubic"]), "unknown baseline 'bicubic'"),
    (lambda r: r["evaluate"]["default"].update(external={"identity": "x"}), "'identity' is taken"),
    (lambda r: r["evaluate"]["default"]["protocol"].update(colour="lab"), "evaluate.default.protocol.colour"),
    (lambda r: r["evaluate"]["default"]["protocol"].update(crop_border=-1), "crop_border"),
    (lambda r: r["stats"]["default"].update(confidence=1.5), "stats.default.confidence"),
    (lambda r: r["stats"]["default"].update(n_perm=5), "n_perm"),
    (lambda r: r["report"]["default"].update(colour="blue"), "report.default.colour"),
    (lambda r: r["ablations"]["default"]["families"]["refiner"].update(paper_choice="magic"), "paper_choice 'magic'"),
    (lambda r: r["ablations"]["default"]["families"]["refiner"]["variants"]["lrt"].update(needs=["fid"]),
     "variants.lrt.needs"),
    (lambda r: r["ablations"]["default"]["families"]["refiner"]["variants"]["lrt"]["set"].update(
        {"loop.stepz": 3}), "families.refiner.variants.lrt"),
    (lambda r: r.update(ablation_families=["refiner", "positions"]), "ablation_families"),
    (lambda r: r["ablations"]["default"]["families"]["conditioning"]["variants"]["discrete"]["set"].update(
        init_from=""), "families.conditioning: every variant must start from the same weights"),
    (lambda r: r["pretrain_restoration"]["default"].update(identity_share=0.5, identity_steps=0),
     "identity_share > 0 needs identity_steps"),
    (lambda r: r["pretrain_restoration"]["default"]["data"].update(val_photos="test"),
     "val_photos must be"),
    (lambda r: r["ablations"]["default"].update(seeds=[0, 0]), "ablations.default.seeds must be a non-empty list"),
    (lambda r: r["ablations"]["default"].update(seeds=[]), "ablations.default.seeds must be a non-empty list"),
    (lambda r: r["ablations"]["default"].update(seeds=[-1]), "distinct integers >= 0"),
    (lambda r: r["ablations"]["default"].update(seeds=2), "ablations.default.seeds: expected a list"),
    (lambda r: r["ablations"]["default"]["families"]["refiner"].update(pretrain={"fraction": 0.5}),
     "families.refiner.pretrain: only train_transformer"),
    (lambda r: r["ablations"]["default"]["families"]["positions"]["pretrain"].update(fraction=0.3),
     "pretrain.fraction 0.3 gives 19 px"),
    (lambda r: r["ablations"]["default"]["families"]["positions"]["pretrain"].update(patch_nums=[1, 2, 5]),
     "families.positions.pretrain"),
    (lambda r: r["ablations"]["default"]["families"]["positions"]["pretrain"].update(size=32),
     "families.positions.pretrain.size"),
    (lambda r: r["train_tokenizer"]["default"]["loop"].update(lr=float("nan")),
     "train_tokenizer.default.loop.lr: expected a finite number, got nan"),
    (lambda r: r["stats"]["default"].update(confidence=float("inf")), "stats.default.confidence: expected a finite"),
    (lambda r: r["train_tokenizer"]["default"]["loop"].update(steps=True), "loop.steps: expected an integer"),
    (lambda r: r["data"]["default"].update(size=7), "data.default.size must be between 16 and 1024"),
    (lambda r: (r["data"]["default"].update(size=48), r["train_tokenizer"]["default"]["data"].update(pairs="manifest")),
     "train_tokenizer.default.data.crop 64 is larger than the 48 px synthetic images (data.default.size)"),
    (lambda r: r["ablations"]["default"]["families"]["refiner"]["variants"]["lrt"]["set"].update(
        {"data.crop": 96, "data.pairs": "manifest", "data.val_photos": ""}),
     "families.refiner.variants.lrt.data.crop 96 is larger than the 64 px"),
    (lambda r: r["ablations"]["default"]["families"]["refiner"]["variants"]["lrt"]["set"].update(
        {"data.pairs": "manifest"}), "data.val_photos needs data.pairs: onthefly"),
    (_center_crop_of_small_images, "center_crop needs test images of at least the model's 64 px"),
    (lambda r: r.update(evaluate=None), "section 'evaluate' is empty (null)"),
    (lambda r: r["stats"].update(default=None), "stats.default is empty (null); write {} for the defaults"),
    (lambda r: r["bench"].update(default=[1, 8]), "bench.default must be a mapping"),
    (lambda r: r["train_refiner"]["default"].update(tune=None), "train_refiner.default.tune: expected a mapping"),
    (lambda r: r.update(tracking=None), "section 'tracking' must be a mapping"),
    (lambda r: r.update(ablation_families=None), "ablation_families must be a list"),
    (lambda r: r.update(profiles=None), "profiles must be the list"),
    (lambda r: r.update(evalute={"default": {}}), "unknown section 'evalute'"),
])
def test_bad_params_fail_naming_the_key(edit, message, tmp_path):
    with pytest.raises(UserError, match=re.escape(message)):
        _params(tmp_path, edit)


def test_workers_take_the_per_worker_resources_and_one_worker_keeps_the_trials_own(tmp_path):
    from pipelines.params import Resources, TuneParams

    assert TuneParams(resources=Resources(cpu=4, gpu=1)).trial_resources() == {"CPU": 4, "GPU": 1}
    assert TuneParams(resources=Resources(cpu=4), gpus_per_worker=1).trial_resources() == {"CPU": 4, "GPU": 1}
    assert TuneParams(resources=Resources(cpu=4, gpu=1), workers=8).trial_resources() == {"CPU": 1, "GPU": 0}
    assert TuneParams(workers=2, cpus_per_worker=6, gpus_per_worker=1).trial_resources() == {"CPU": 6, "GPU": 1}
    st = _params(tmp_path, lambda r: r["train_transformer"]["default"].update(tune={"workers": 2})).stages[
        "train_transformer"]
    assert st.tune.workers == 2


def test_a_stage_reads_only_the_sections_it_uses_in_its_own_profile(tmp_path):
    path = _write(tmp_path, lambda r: r["stats"]["default"].update(n_perm=5) or r["model"]["paper"].update(
        preset="enormous"))
    p = Params(path)
    assert p.data.size == RAW["data"]["default"]["size"] and p.stages["train_refiner"].config.loop.steps > 0
    assert p.reads == {"profile", "data.default", "model.default", "train_refiner.default"}
    with pytest.raises(UserError, match="n_perm"):  # what the stage does not read still fails validation
        p.check_profile()


def test_validation_checks_every_profile(tmp_path):
    assert [p.profile for p in check_all()] == ["default", "tiny", "small", "paper"]
    path = _write(tmp_path, lambda r: r["train_refiner"]["paper"]["loop"].update(lr=float("nan")))
    Params(path).check_profile()  # the default profile is fine
    with pytest.raises(UserError, match=r"train_refiner\.paper\.loop\.lr: expected a finite number"):
        check_all(path)


def test_validate_command_exits_2_with_one_line(tmp_path, capsys):
    from pipelines import validate

    bad = tmp_path / "params.yaml"
    bad.write_text("profile: default\nprofiles: [default]\n")
    assert validate.main(["--params", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"{bad}: error: missing section 'model'"
    assert validate.main([]) == 0
    assert "params.yaml ok: profile default" in capsys.readouterr().out


def test_preflight_lists_every_missing_weight_and_dataset_with_its_command(tmp_path, monkeypatch, capsys):
    from pipelines import validate
    from restorevar.data import weights

    cache = tmp_path / "weights"
    monkeypatch.setenv("RESTOREVAR_WEIGHTS", str(cache))
    path = _write(tmp_path, lambda r: r.update(profile="paper"))
    missing = Params(path).check_profile().preflight()
    var = [m for m in missing if m.startswith("weights var/")]
    assert len(var) == 2 and all(m.endswith(f"restorevar data fetch-weights --cache {cache}") for m in var)
    assert any("train_transformer.paper.init_from var_d16" in m for m in var)
    assert sum(m.startswith("weights hub/") for m in missing) == 2  # LPIPS: the paper's decoder requires it
    datasets = [m for m in missing if m.startswith("dataset ")]
    assert [m.split()[1] for m in datasets] == RAW["data"]["paper"]["datasets"]
    assert all(f"restorevar data fetch {m.split()[1]} --root data/raw" in m for m in datasets)
    # present, at the published size (sparse files: only size is checked here, the hash before loading)
    for name in ("var_vae", "var_d16", "alexnet", "lpips_alex"):
        spec = weights.BY_NAME[name]
        (cache / spec.relpath).parent.mkdir(parents=True, exist_ok=True)
        with open(cache / spec.relpath, "wb") as f:
            f.truncate(spec.size)
    assert all(m.startswith("dataset ") for m in Params(path).check_profile().preflight())
    assert validate.main(["--params", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    n = len(RAW["data"]["paper"]["datasets"])
    assert err[-1].endswith(f"profile paper needs {n} thing(s) that are not here (listed above); get them, then run again")
    assert all(line.startswith("missing: dataset ") for line in err[:-1])
    assert validate.main(["--params", str(path), "--no-preflight"]) == 0
    assert Params().check_profile().preflight() == []  # the default profile needs nothing it lacks


@pytest.mark.parametrize("profile", ["small", "paper"])
def test_real_data_ablations_run_at_their_stages_full_length(profile, tmp_path):
    p = _params(tmp_path, lambda r: r.update(profile=profile))
    for family in p.ablation_families:
        stage = p.ablations.families[family].stage
        full = p.stages[stage].config_dict["loop"]
        for name, d in p.ablation_variants[family].items():
            assert d["loop"] == full, f"{family}/{name}"
    pre = p.ablation_pretrain["positions"]["rope2d"]
    d = p.stages["train_transformer"].config_dict["data"]
    assert pre["data"]["crop"] == d["crop"] // 2 and pre["data"]["resize_shorter"] == d["resize_shorter"] // 2


def test_a_variants_model_overrides_add_to_the_profiles_own(tmp_path):
    size = ["transformer.drop_path_rate=0.05"]
    p = _params(tmp_path, lambda r: r.update(profile="small") or r["model"]["small"].update(overrides=size))
    v = p.ablation_variants["conditioning"]["discrete"]
    assert v["model"]["overrides"] == [*size, "transformer.conditioning=discrete"]
    assert p.stages["train_transformer"].variants["lr1e-4"]["model"]["overrides"] == size


def test_a_familys_set_applies_to_every_variant_before_its_own(tmp_path):
    def edit(r):
        fam = r["ablations"]["default"]["families"]["refiner"]
        fam["set"] = {"loop.lr": 0.0005}
        fam["variants"]["lrt"]["set"]["loop.lr"] = 0.002

    p = _params(tmp_path, edit)
    v = p.ablation_variants["refiner"]
    assert v["none"]["loop"]["lr"] == 0.0005 and v["lrt"]["loop"]["lr"] == 0.002
    assert Params().ablation_variants["positions"]["ape"]["health"] is False  # default: curves only
    assert Params().ablation_pretrain["positions"]["ape"]["health"] is False
