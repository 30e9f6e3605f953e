"""params.yaml is checked completely before any work starts; errors name the key. A stage reads only its own
profile's entries of the sections it uses."""
import copy
import re

import pytest
import yaml

from pipelines.params import PARAMS, Params, load_raw
from pipelines.preflight import check_all, check_profile, preflight
from restorevar.errors import UserError

RAW = yaml.safe_load(PARAMS.read_text())


def _write(tmp_path, edit):
    raw = copy.deepcopy(RAW)
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # order is meaning: overrides are stored as written
    return path


def _params(tmp_path, edit):
    return check_profile(Params(_write(tmp_path, edit)))


@pytest.mark.parametrize("profile", RAW["profiles"])
def test_every_shipped_profile_validates(profile, tmp_path):
    p = _params(tmp_path, lambda r: r.update(profile=profile))
    assert p.profile == profile and set(p.stages) == {"pretrain_tokenizer", "pretrain_prior", "pretrain_restoration",
                                                      "train_tokenizer", "train_promptir",
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
    (lambda r: r["model"]["default"].update(overrides={"transformer": {"depht": 3}}), "depht"),
    (lambda r: r["model"]["default"].update(overrides=["transformer.depht=3"]),
     ("model.default.overrides: a list of 'key=value' strings is the old form; write a nested mapping, "
      "e.g. overrides: {transformer: {depht: 3}}")),
    (lambda r: r["model"]["default"].update(overrides={"transformer.depth": 3}),
     "model.default.overrides: 'transformer.depth' is a dotted key; nest it: {transformer: {depth: 3}}"),
    (lambda r: r["data"]["default"].update(source="ftp"), "ftp"),
    (lambda r: r["data"]["default"].update(source="datasets"), "datasets"),
    (lambda r: r["train_refiner"].pop("default"), "train_refiner"),
    (lambda r: r["tracking"].update(mlflow="x"), "tracking.mlflow"),
    (lambda r: r["train_transformer"]["default"].update(
        tune={"variants": {"a": {"loop": {"lr": 0.1}}, "b": {"loop": {"lr": 0.2}}}}), "metric or a chosen"),
    (lambda r: r["train_transformer"]["default"].update(tune={"variants": {"a": {"loop.lr": 0.1}}, "chosen": "a"}),
     ("train_transformer.default.tune.variants.a: 'loop.lr' is a dotted key, which params.yaml no longer reads; "
      "nest it: {loop: {lr: 0.1}}")),
    (lambda r: r["train_transformer"]["default"].update(tune={"variants": {"a": {"data": {"crop": {"x": 1}}}}, "chosen": "a"}),
     "variants.a.data.crop is a setting (64), not a section"),
    (lambda r: r["train_transformer"]["default"].update(
        tune={"variants": {"a": {"loop": {"stepz": 1}}}, "chosen": "a"}), "variants.a"),
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
        {"loop": {"stepz": 3}}), "families.refiner.variants.lrt"),
    (lambda r: r["ablations"]["default"]["families"]["refiner"]["variants"]["lrt"].update(
        set={"model.overrides": ["refiner.kind=lrt"]}),
     "families.refiner.variants.lrt: 'model.overrides' is a dotted key, which params.yaml no longer reads; nest it"),
    (lambda r: r["ablations"]["default"]["families"]["refiner"]["variants"]["lrt"].update(
        set={"model": {"overrides": ["refiner.kind=lrt"]}}),
     ("variants.lrt.model.overrides: a list of 'key=value' strings is the old form; write a nested mapping, "
      "e.g. overrides: {refiner: {kind: lrt}}")),
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
        {"data": {"crop": 96, "pairs": "manifest", "val_photos": ""}}),
     "families.refiner.variants.lrt.data.crop 96 is larger than the 64 px"),
    (lambda r: r["ablations"]["default"]["families"]["refiner"]["variants"]["lrt"]["set"].update(
        {"data": {"pairs": "manifest"}}), "data.val_photos needs data.pairs: onthefly"),
    (_center_crop_of_small_images, "center_crop needs test images of at least the model's 64 px"),
    (lambda r: r.update(evaluate=None), "section 'evaluate' is empty (null)"),
    (lambda r: r["stats"].update(default=None), "stats.default is empty (null); write {} for the defaults"),
    (lambda r: r["bench"].update(default=[1, 8]), "bench.default must be a mapping"),
    (lambda r: r["train_refiner"]["default"].update(tune=None), "train_refiner.default.tune: expected a mapping"),
    (lambda r: r.update(tracking=None), "section 'tracking' must be a mapping"),
    (lambda r: r.update(ablation_families=None), "ablation_families must be a list"),
    (lambda r: r.update(profiles=None), "profiles must be the list"),
    (lambda r: r.update(evalute={"default": {}}), "unknown section 'evalute'"),
    # every number has both bounds, and a config's own check is named by stage, profile and key
    (lambda r: r["train_transformer"]["default"]["loop"].update(log_every=0),
     "train_transformer.default.loop.log_every must be between 1 and 10000000, got 0"),
    (lambda r: r.update(profile="tiny") or r["train_tokenizer"]["tiny"]["loop"].update(ckpt_every=0),
     "train_tokenizer.tiny.loop.ckpt_every must be between 1 and 10000000, got 0"),
    (lambda r: r.update(profile="small") or r["pretrain_restoration"]["small"]["loop"].update(eval_every=0),
     "pretrain_restoration.small.loop.eval_every must be between 1 and 10000000, got 0"),
    (lambda r: r["train_refiner"]["default"]["loop"].update(steps=10**30),
     "train_refiner.default.loop.steps must be between 1 and 10000000, got 1000000000000000000000000000000"),
    (lambda r: r["train_refiner"]["default"]["loop"].update(steps=0),
     "train_refiner.default.loop.steps must be between 1 and 10000000, got 0"),
    (lambda r: r["train_refiner"]["default"]["loop"].update(steps=10**200),
     "loop.steps must be between 1 and 10000000, got an integer of about 201 digits"),
    (lambda r: r.update(profile="small") or r["finetune_decoder"]["small"]["loop"].update(batch_size=10**6),
     "finetune_decoder.small.loop.batch_size must be between 1 and 65536"),
    (lambda r: r.update(profile="paper") or r["train_transformer"]["paper"]["loop"].update(lr=0.0),
     "train_transformer.paper.loop.lr must be in (0, 1], got 0"),
    (lambda r: r.update(profile="paper") or r["train_transformer"]["paper"]["loop"].update(lr=2.5),
     "train_transformer.paper.loop.lr must be in (0, 1], got 2.5"),
    (lambda r: r["train_tokenizer"]["default"]["loop"].update(betas=[0.9, 1.0]),
     "train_tokenizer.default.loop.betas[1] must be in [0, 1), got 1"),
    (lambda r: r["train_tokenizer"]["default"]["loop"].update(seed=2**40), "train_tokenizer.default.loop.seed must be"),
    (lambda r: r["train_tokenizer"]["default"]["loop"].update(val_batches=-1), "loop.val_batches must be between 0"),
    (lambda r: r["train_tokenizer"]["default"]["data"].update(crop=0), "train_tokenizer.default.data.crop must be"),
    (lambda r: r["train_tokenizer"]["default"]["data"].update(num_workers=10**4), "default.data.num_workers must be"),
    (lambda r: r["train_tokenizer"]["default"].update(degraded_share=1.5),
     "train_tokenizer.default.degraded_share must be between 0 and 1, got 1.5"),
    (lambda r: r["train_tokenizer"]["default"].update(frozen=True, init_from=""),
     "train_tokenizer.default.frozen needs init_from"),
    (lambda r: r["finetune_decoder"]["default"].update(perceptual_weight=-1),
     "finetune_decoder.default.perceptual_weight must be between 0 and 100, got -1"),
    (lambda r: r["finetune_decoder"]["default"].update(discriminator_lr=0),
     "finetune_decoder.default.discriminator_lr must be in (0, 1]"),
    (lambda r: r["pretrain_prior"]["default"].update(label_smoothing=1.0), "pretrain_prior.default.label_smoothing"),
    (lambda r: r["train_transformer"]["default"].update(gain_lr_mult=0),
     "train_transformer.default.gain_lr_mult must be in (0, 10000], got 0"),
    (lambda r: r["train_transformer"]["default"].update(gate_init=1e6), "train_transformer.default.gate_init must be"),
    (lambda r: r["train_transformer"]["default"].update(tune={"variants": {"a": {"loop": {"log_every": 0}}}, "chosen": "a"}),
     "train_transformer.default.tune.variants.a.loop.log_every must be between 1"),
    (lambda r: r["train_transformer"]["default"].update(tune={"variants": {"a": {"loop": {"lr": {"x": 1}}}}}),
     "train_transformer.default.tune.variants.a.loop.lr is a setting (0.0001), not a section"),
    (lambda r: r["train_transformer"]["default"].update(tune={"max_failures": -1}),
     "train_transformer.default.tune.max_failures must be between 0 and 100, got -1"),
    (lambda r: r["train_transformer"]["default"].update(tune={"resources": {"cpu": 1e9}}),
     "train_transformer.default.tune.resources.cpu must be between 0 and 1024"),
    (lambda r: r["train_transformer"]["default"].update(tune={"workers": 10**5}),
     "train_transformer.default.tune.workers must be between 1 and 1024"),
    (lambda r: r["ablations"]["default"]["families"]["refiner"]["loop"].update(log_every=0),
     "ablations.default.families.refiner.loop.log_every must be between 1"),
    (lambda r: r["ablations"]["default"]["families"]["positions"]["pretrain"]["loop"].update(lr=float("nan")),
     "ablations.default.families.positions.pretrain.loop.lr: expected a finite number, got nan"),
    (lambda r: r["ablations"]["default"]["families"]["positions"]["pretrain"].update(fraction=1e300),
     "ablations.default.families.positions.pretrain.fraction must be in [0, 1), got 1e+300"),
    (lambda r: r["ablations"]["default"].update(seeds=[0, 2**40]), "ablations.default.seeds[1] must be between 0 and"),
    (lambda r: r["ablations"]["default"]["scale_space"].update(split=0), "ablations.default.scale_space.split must be"),
    (lambda r: r["data"]["default"].update(train_per_degradation=10**12),
     "data.default.train_per_degradation must be between 0 and 100000"),
    (lambda r: r["evaluate"]["default"]["cost"].update(repeats=10**9), "evaluate.default.cost.repeats must be between"),
    (lambda r: r["evaluate"]["default"].update(batch_size=0), "evaluate.default.batch_size must be between 1"),
    (lambda r: r["stats"]["default"].update(n_boot=10**12), "stats.default.n_boot must be between 100 and"),
    (lambda r: r["stats"]["default"].update(seed=-1), "stats.default.seed must be between 0"),
    (lambda r: r["bench"]["default"].update(batch_sizes=[1, 0]), "bench.default.batch_sizes[1] must be between 1"),
    (lambda r: r["bench"]["default"].update(train_steps=10**8), "bench.default.train_steps must be between 1"),
    (lambda r: r["report"]["default"].update(grid_images_per_degradation=-1),
     "report.default.grid_images_per_degradation must be between 0"),
    (lambda r: r["train_promptir"]["default"]["tune"].update(seeds=[0, 0]), "train_promptir.default.tune.seeds must be"),
    (lambda r: r["train_promptir"]["default"]["tune"].update(variants={"a": {}, "b": {}}, chosen="a"),
     "train_promptir.default.tune: seeds train one variant"),
    (lambda r: r["train_promptir"]["default"]["loop"].update(grad_clip=1.0),
     "train_promptir.default.loop.grad_clip=1.0 is not implemented by the promptir trainer"),
    (lambda r: r["train_promptir"]["default"]["model"].update(preset="huge"), "unknown PromptIR preset 'huge'"),
    (lambda r: r["train_promptir"]["default"]["model"].update(overrides={"dim": 0}), "promptir.dim"),
    (lambda r: r["train_refiner"]["default"].update(model={"preset": "cpu"}),
     "train_refiner.default.model: this stage trains the `model` section's RestoreVAR; set it there"),
    (lambda r: r.update(profile="tiny") or r["model"]["tiny"].update(overrides={"transformer": {"depht": 3}}),
     "model.tiny: override 'transformer.depht'"),
])
def test_bad_params_fail_naming_the_key(edit, message, tmp_path):
    with pytest.raises(UserError, match=re.escape(message)):
        _params(tmp_path, edit)


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# the start of train_transformer.default's loop, a line found once in params.yaml
TT_LOOP = "loop: {steps: 100, batch_size: 8, lr: 0.0001, ckpt_every: 25, log_every: 5, "


@pytest.mark.parametrize(("edit", "message"), [
    # a key or a section given twice: YAML alone keeps the last one, silently
    (lambda t: _replace_once(t, "profile: default\n", "profile: default\nprofile: tiny\n"),
     "duplicate key profile (first at line"),
    (lambda t: t + "\nstats:\n  default: {}\n", "duplicate key stats (first at line"),
    (lambda t: _replace_once(t, TT_LOOP, TT_LOOP + "steps: 8000, "),
     "duplicate key train_transformer.default.loop.steps (first at line"),
    (lambda t: _replace_once(t, "  tiny:\n    <<: *eval\n    batch_size: 4\n",
                             "  tiny:\n    <<: *eval\n    batch_size: 4\n    batch_size: 2\n"),
     "duplicate key evaluate.tiny.batch_size"),
    # what Python's or the reader's own limits turned into a traceback
    (lambda t: _replace_once(t, TT_LOOP, TT_LOOP.replace("100", "9" * 5000, 1)),
     "train_transformer.default.loop.steps: the integer 9999999999999999...99999999 (5000 characters) is larger"),
    (lambda t: _replace_once(t, TT_LOOP, TT_LOOP.replace("100", "0x" + "f" * 5000, 1)),
     "train_transformer.default.loop.steps: the integer 0xffffffffffffff"),
    (lambda t: _replace_once(t, TT_LOOP, TT_LOOP.replace("100", "2024-13-45", 1)),
     "train_transformer.default.loop.steps: cannot read '2024-13-45' (month must be in 1..12)"),
    (lambda t: t + "deep: " + "[" * 5000 + "]" * 5000 + "\n", "nests its lists or mappings too deeply"),
    (lambda t: _replace_once(t, TT_LOOP, TT_LOOP.replace("{", "{1: 2, ", 1)),
     "train_transformer.default.loop: the key 1 reads as a number, not as a name; quote it ('1')"),
    (lambda t: t + "on: 1\n", "the key on reads as true/false, not as a name"),
    (lambda t: t.encode() + b"# caf\xe9\n", "is not UTF-8 text"),
])
def test_bad_params_files_fail_naming_the_file_and_line(edit, message, tmp_path):
    text = edit(PARAMS.read_text())
    path = tmp_path / "params.yaml"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    with pytest.raises(UserError, match=re.escape(message)) as e:
        load_raw(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_merge_keys_may_still_be_overridden(tmp_path):
    """``<<: *base`` then a key of base: an override, not a duplicate (the shipped evaluate.tiny does it)."""
    path = tmp_path / "params.yaml"
    path.write_text("profile: a\nbase: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\nmore: {<<: [*b, {x: 4}], y: 5}\n")
    raw = load_raw(path)
    assert raw["other"] == {"x": 3, "y": 2} and raw["more"] == {"x": 1, "y": 5}
    path.write_text("profile: a\nbase: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n  x: 4\n")
    with pytest.raises(UserError, match=re.escape(f"{path}, line 6: duplicate key other.x (first at line 5)")):
        load_raw(path)


def test_a_params_path_that_is_no_regular_file_is_refused(tmp_path):
    import os

    with pytest.raises(UserError, match="is a folder"):
        load_raw(tmp_path)
    os.mkfifo(tmp_path / "fifo.yaml")
    with pytest.raises(UserError, match=r"is not a regular file \(a FIFO"):
        load_raw(tmp_path / "fifo.yaml")


def test_workers_take_the_per_worker_resources_and_one_worker_keeps_the_trials_own(tmp_path):
    from pipelines.params_schema import Resources, TuneParams

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
        check_profile(p)


def test_validation_checks_every_profile(tmp_path):
    assert [p.profile for p in check_all()] == ["default", "tiny", "small", "paper"]
    path = _write(tmp_path, lambda r: r["train_refiner"]["paper"]["loop"].update(lr=float("nan")))
    check_profile(Params(path))  # the default profile is fine
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
    missing = preflight(check_profile(Params(path)))
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
    assert all(m.startswith("dataset ") for m in preflight(check_profile(Params(path))))
    assert validate.main(["--params", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    n = len(RAW["data"]["paper"]["datasets"])
    assert err[-1].endswith(f"profile paper needs {n} thing(s) that are not here (listed above); get them, then run again")
    assert all(line.startswith("missing: dataset ") for line in err[:-1])
    assert validate.main(["--params", str(path), "--no-preflight"]) == 0
    assert preflight(check_profile(Params())) == []  # the default profile needs nothing it lacks


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
    size = {"transformer": {"drop_path_rate": 0.05}}
    p = _params(tmp_path, lambda r: r.update(profile="small") or r["model"]["small"].update(overrides=size))
    v = p.ablation_variants["conditioning"]["discrete"]
    assert v["model"]["overrides"] == ["transformer.drop_path_rate=0.05", "transformer.conditioning=discrete"]
    assert p.stages["train_transformer"].variants["lr1e-4"]["model"]["overrides"] == ["transformer.drop_path_rate=0.05"]


def test_a_familys_set_applies_to_every_variant_before_its_own(tmp_path):
    def edit(r):
        fam = r["ablations"]["default"]["families"]["refiner"]
        fam["set"] = {"loop": {"lr": 0.0005}}
        fam["variants"]["lrt"]["set"]["loop"] = {"lr": 0.002}

    p = _params(tmp_path, edit)
    v = p.ablation_variants["refiner"]
    assert v["none"]["loop"]["lr"] == 0.0005 and v["lrt"]["loop"]["lr"] == 0.002
    assert v["lrt"]["loop"]["steps"] == 30  # the family's reduced loop, merged key by key, not replaced
    assert Params().ablation_variants["positions"]["ape"]["health"] is False  # default: curves only
    assert Params().ablation_pretrain["positions"]["ape"]["health"] is False


def test_model_overrides_merge_from_profile_to_family_to_variant(tmp_path):
    """One deep merge: the profile's overrides, then the family's, then the variant's, each key keeping its place
    and taking the last value written, so a config (and a checkpoint) holds each setting once."""
    def edit(r):
        r["model"]["default"]["overrides"] = {"transformer": {"conditioning": "discrete",
                                                              "condition_inject": "colocated_shift"}}
        fam = r["ablations"]["default"]["families"]["conditioning"]
        fam["set"] = {**fam.get("set", {}), "model": {"overrides": {"transformer": {"condition_inject": "none"}}},
                      "copy_init": 0.0, "shift_weight": 0.0}
        fam["variants"]["continuous"]["set"] = {"model": {"overrides": {"transformer": {"conditioning": "continuous",
                                                                                        "depth": 2}}}}

    v = _params(tmp_path, edit).ablation_variants["conditioning"]["continuous"]
    assert v["model"]["overrides"] == ["transformer.conditioning=continuous", "transformer.condition_inject=none",
                                       "transformer.depth=2"]


def test_override_strings_read_back_as_the_values_written():
    """The nested mapping becomes the strings a checkpoint stores; each builds the model with the value and type
    written, and a string that would read back as a number is quoted."""
    from pipelines.params_yaml import override_strings
    from restorevar.models.presets import get_preset

    tree = {"vqvae": {"patch_nums": [1, 2, 4, 8], "shortcut": True},
            "transformer": {"drop_path_rate": 0.05, "conditioning": "discrete"}}
    strings = override_strings(tree, "x")
    assert strings == ["vqvae.patch_nums=[1, 2, 4, 8]", "vqvae.shortcut=true", "transformer.drop_path_rate=0.05",
                       "transformer.conditioning=discrete"]
    cfg = get_preset("tiny", strings)
    assert (list(cfg.vqvae.patch_nums), cfg.vqvae.shortcut) == ([1, 2, 4, 8], True)
    assert (cfg.transformer.drop_path_rate, cfg.transformer.conditioning) == (0.05, "discrete")
    assert override_strings({"refiner": {"kind": "1"}}, "x") == ['refiner.kind="1"']


def test_the_paper_families_keep_the_papers_model_under_the_default_profiles_skip():
    """The default profile's transformer carries the co-located skip and its refiner the detail residual (deviations);
    the conditioning, positions and refiner families test the paper's claims, so they build the paper's parts: no
    skip, no copy start, the full residual."""
    from restorevar.config import from_dict
    from restorevar.train.refiner import RefinerTrainConfig
    from restorevar.train.transformer import TransformerTrainConfig

    p = Params()
    main = p.stages["train_transformer"].config.model.build_config()
    assert (main.transformer.condition_inject, main.refiner.residual) == ("colocated_image_shift", "detail")
    for family in ("conditioning", "positions"):
        for name, d in p.ablation_variants[family].items():
            cfg = from_dict(TransformerTrainConfig, d)
            t = cfg.model.build_config().transformer
            assert (t.condition_inject, cfg.copy_init, cfg.shift_weight) == ("none", 0.0, 0.0), (family, name)
    for name, d in p.ablation_variants["refiner"].items():  # the paper's full residual, on every refiner kind
        r = from_dict(RefinerTrainConfig, d).model.build_config().refiner
        assert (r.kind, r.residual) == (name, "full"), name
    assert "transformer.conditioning=continuous" in p.ablation_variants["conditioning"]["continuous"]["model"]["overrides"]


def test_ctrl_c_while_validate_imports_its_modules_is_one_line_and_130():
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    p = subprocess.Popen([sys.executable, "-m", "pipelines.validate"], cwd=root, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)},
                         preexec_fn=_default_sigint)  # noqa: PLW1509 - it only resets one signal
    time.sleep(0.6)  # inside the imports of pipelines.params (torch among them)
    p.send_signal(signal.SIGINT)
    rc, err = p.wait(timeout=120), p.stderr.read()
    # 130, or death by SIGINT itself (-2), which a shell reports as 130 too: Python ends that way when the
    # interrupt is still pending as the interpreter shuts down, a matter of timing under load
    assert rc in (130, -signal.SIGINT) and "Traceback" not in err and err.strip().endswith("interrupted"), err


def _default_sigint() -> None:
    """In the child: Ctrl-C's default action. A shell's background job (as CI may run the tests) starts with SIGINT
    ignored, which a child inherits, and Python then never raises KeyboardInterrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_the_promptir_stage_trains_its_own_model_per_seed_with_the_published_recipe():
    from restorevar.baselines.promptir import PromptIRRef
    from restorevar.train.promptir import PromptIRTrainConfig

    p = Params()
    sp = p.stages["train_promptir"]
    cfg = sp.config
    assert isinstance(cfg, PromptIRTrainConfig) and cfg.model == PromptIRRef("cpu", [])
    assert (cfg.loop.lr, cfg.loop.betas, cfg.loop.weight_decay, cfg.cosine_horizon) == (2e-4, (0.9, 0.999), 0.01, 1.25)
    assert list(sp.tune.seeds) == [0, 1] and list(sp.variants) == ["main"]
    # the same pairs and the same unseen validation scenes as the transformer it is compared with
    assert sp.config_dict["data"] == {**p.stages["train_transformer"].config_dict["data"]}
    q = Params()
    q.stages["train_promptir"]
    assert "model.default" not in q.reads and "train_promptir.default" in q.reads  # its dvc params: its own entry
