"""pipelines.training_stage.TrialSpec: a training trial crosses Ray as one plain dict, made by one function and read by one."""
import json

import pytest

from pipelines.params import Params
from pipelines.training_stage import TrialSpec
from restorevar.errors import UserError
from restorevar.train.transformer import TransformerTrainConfig


def _spec(**changes) -> TrialSpec:
    config = Params().stages["train_transformer"].variants["main"]
    base = {"stage": "train_transformer", "profile": "default", "variant": "main", "family": "train_transformer",
            "replicate": False, "config": config, "run_dir": "runs/x/main", "root": "/project",
            "mlflow_uri": "sqlite:///m.db", "experiment_id": "1"}
    return TrialSpec(**{**base, **changes})


def test_a_spec_crosses_as_json_and_comes_back_equal():
    t = _spec(replicate=True, workers=2, provenance={"git_commit": "abc"})
    wire = json.loads(json.dumps(t.to_ray()))  # Tune keeps it in its experiment state
    assert TrialSpec.from_ray(wire) == t


def test_the_trainer_config_is_typed_from_the_params_columns():
    t = _spec()
    cfg = t.train_config()
    p = Params()
    assert isinstance(cfg, TransformerTrainConfig)
    assert cfg.loop.lr == p.stages["train_transformer"].config.loop.lr
    assert cfg.model.overrides == p.stages["train_transformer"].config.model.overrides
    assert t.pretrain_config() is None


def test_a_replicate_carries_its_seed_in_its_names():
    config = _spec().config
    t = _spec(replicate=True, config={**config, "loop": {**config["loop"], "seed": 3}})
    assert t.seed == 3 and t.run_name == "train_transformer/main/seed3" and t.described == "main (seed 3)"
    assert _spec().run_name == "train_transformer/main" and _spec().described == "main"


def test_an_unknown_or_missing_key_is_refused():
    wire = _spec().to_ray()
    with pytest.raises(UserError, match="gpu_count"):
        TrialSpec.from_ray({**wire, "gpu_count": 1})
    del wire["run_dir"]
    with pytest.raises(UserError, match="run_dir"):
        TrialSpec.from_ray(wire)
