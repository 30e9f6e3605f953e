"""params.yaml is checked completely before any work starts; errors name the key."""
import copy

import pytest
import yaml

from pipelines.params import PARAMS, Params
from restorevar.errors import UserError

RAW = yaml.safe_load(PARAMS.read_text())


def _params(tmp_path, edit):
    raw = copy.deepcopy(RAW)
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return Params(path)


@pytest.mark.parametrize("profile", RAW["profiles"])
def test_every_shipped_profile_validates(profile, tmp_path):
    p = _params(tmp_path, lambda r: r.update(profile=profile))
    assert p.profile == profile and set(p.stages) == {"train_tokenizer", "finetune_decoder", "train_transformer",
                                                      "train_refiner"}
    assert p.stages["train_transformer"].config.model.preset == p.model.preset


def test_default_profile_is_the_offline_cpu_one():
    p = Params()
    assert RAW["profile"] == "default" and p.model.preset == "cpu" and p.data.source == "synth"
    assert all(s.tune.resources.gpu == 0 for s in p.stages.values())


def test_small_profile_trains_variants_and_exports_the_best(tmp_path):
    p = _params(tmp_path, lambda r: r.update(profile="small"))
    st = p.stages["train_transformer"]
    assert set(st.variants) == {"lr3e-4", "lr1e-4"} and st.tune.metric == "val_acc"
    assert st.variants["lr1e-4"]["loop"]["lr"] == 1e-4


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
    (lambda r: r["ablations"]["default"]["families"]["refiner"].update(pretrain={"fraction": 0.5}),
     "families.refiner.pretrain: only train_transformer"),
    (lambda r: r["ablations"]["default"]["families"]["positions"]["pretrain"].update(fraction=0.3),
     "pretrain.fraction 0.3 gives 19 px"),
    (lambda r: r["ablations"]["default"]["families"]["positions"]["pretrain"].update(patch_nums=[1, 2, 5]),
     "families.positions.pretrain"),
    (lambda r: r["ablations"]["default"]["families"]["positions"]["pretrain"].update(size=32),
     "families.positions.pretrain.size"),
])
def test_bad_params_fail_naming_the_key(edit, message, tmp_path):
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")):
        _params(tmp_path, edit)


def test_validate_command_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    from pipelines import validate

    bad = tmp_path / "params.yaml"
    bad.write_text("profile: default\nprofiles: [default]\n")
    monkeypatch.setattr("pipelines.params.PARAMS", bad)
    monkeypatch.setattr(validate, "Params", lambda: Params(bad))
    assert validate.main() == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing section 'model'" in err
