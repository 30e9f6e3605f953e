"""Self-describing checkpoints: atomic writes, safe loading, config checks, RNG state."""
import random

import numpy as np
import pytest
import torch

from conftest import make_tiny
from restorevar.checkpoint import (
    config_from_checkpoint,
    load_checkpoint,
    load_components,
    load_model,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from restorevar.config import to_dict
from restorevar.errors import UserError


def _save(path, m, step=5):
    opt = torch.optim.AdamW(m.transformer.parameters(), lr=1e-4)
    save_checkpoint(path, config=m.cfg, components={"transformer": m.transformer.state_dict()}, step=step,
                    optimizer=opt.state_dict(), rng=rng_state())


def test_checkpoint_describes_itself(tmp_path):
    m = make_tiny()
    _save(tmp_path / "c.pt", m)
    ck = load_checkpoint(tmp_path / "c.pt")
    assert ck["step"] == 5 and "optimizer" in ck and "rng" in ck
    assert config_from_checkpoint(ck) == m.cfg
    other = make_tiny(seed=3)
    load_components(other, ck, ["transformer"], tmp_path / "c.pt")
    for a, b in zip(m.transformer.state_dict().values(), other.transformer.state_dict().values()):
        assert torch.equal(a, b)


def test_equal_contents_give_equal_bytes_whatever_the_file_name(tmp_path):
    m = make_tiny()
    torch.manual_seed(0)
    _save(tmp_path / "a.pt", m)
    torch.manual_seed(0)
    (tmp_path / "sub").mkdir()
    _save(tmp_path / "sub" / "other-name.pt", m)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "sub" / "other-name.pt").read_bytes()
    torch.manual_seed(0)
    _save(tmp_path / "b.pt", m, step=6)
    assert (tmp_path / "b.pt").read_bytes() != (tmp_path / "a.pt").read_bytes()


def test_checkpoint_from_another_config_is_refused(tmp_path):
    _save(tmp_path / "c.pt", make_tiny())
    other = make_tiny(["transformer.depth=3"])
    with pytest.raises(UserError, match="another config .*transformer.depth"):
        load_components(other, load_checkpoint(tmp_path / "c.pt"), ["transformer"], tmp_path / "c.pt")
    # training-only settings are not architecture: a different drop-path rate still loads
    load_components(make_tiny(["transformer.drop_path_rate=0.2"]), load_checkpoint(tmp_path / "c.pt"), ["transformer"])


def test_missing_component_is_named(tmp_path):
    _save(tmp_path / "c.pt", make_tiny())
    with pytest.raises(UserError, match="no 'refiner' weights .*holds: transformer"):
        load_components(make_tiny(), load_checkpoint(tmp_path / "c.pt"), ["refiner"])


def test_interrupted_save_keeps_the_last_good_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    m = make_tiny()
    _save(path, m, step=1)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        _save(path, m, step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp litter


def test_non_restorevar_files_are_refused(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(UserError, match="not a RestoreVAR checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    (tmp_path / "t.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "t.pt")


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(tmp_path / "c.pt", config=make_tiny().cfg, components={}, rng=rng_state())
    expect = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expect


# -- checkpoints written before a config field existed ---------------------------------------------
def _save_all(path, m, config):
    save_checkpoint(path, config=config,
                    components={c: getattr(m, c).state_dict() for c in ("vqvae", "transformer", "refiner")})


def test_checkpoint_from_before_cross_norm_eps_keeps_its_function(tmp_path, images):
    # Before cross_norm_eps existed the cross-attention LayerNorms used norm_eps; such a file must rebuild
    # with that value, not the new default.
    old = make_tiny(["transformer.cross_norm_eps=1e-6"], gains=0.5)
    stored = to_dict(old.cfg)
    del stored["transformer"]["cross_norm_eps"]
    _save_all(tmp_path / "old.pt", old, stored)
    ck = load_checkpoint(tmp_path / "old.pt")
    assert "cross_norm_eps" not in ck["config"]["transformer"]
    assert config_from_checkpoint(ck) == old.cfg
    loaded = load_model(tmp_path / "old.pt", ["vqvae", "transformer", "refiner"])
    assert {b.cross_attn.norm_kv.eps for b in loaded.transformer.blocks} == {1e-6}
    torch.testing.assert_close(loaded.restore(images[0]).image_B3HW, old.restore(images[0]).image_B3HW,
                               atol=0, rtol=0)
    # a model with the new default is another function, and is told so
    with pytest.raises(UserError, match="another config .*transformer.cross_norm_eps: checkpoint 1e-06"):
        load_components(make_tiny(), ck, ["transformer"], tmp_path / "old.pt")


def test_missing_cross_norm_eps_follows_the_stored_norm_eps():
    stored = to_dict(make_tiny().cfg)
    stored["transformer"]["norm_eps"] = 1e-4
    del stored["transformer"]["cross_norm_eps"]
    cfg = config_from_checkpoint({"config": stored})
    assert cfg.transformer.cross_norm_eps == cfg.transformer.norm_eps == 1e-4
    assert "cross_norm_eps" not in stored["transformer"]  # the caller's dict is left alone
    # a new checkpoint's own value is kept
    assert config_from_checkpoint({"config": to_dict(make_tiny().cfg)}).transformer.cross_norm_eps == 1e-5


# -- files whose contents do not fit -------------------------------------------------------------
def test_config_that_disagrees_with_its_weights_is_a_one_line_error(tmp_path):
    wide = make_tiny(["transformer.width=96"])
    _save_all(tmp_path / "bad.pt", make_tiny(), wide.cfg)  # says width 96, holds width-64 weights
    with pytest.raises(UserError) as e:
        load_model(tmp_path / "bad.pt", ["vqvae", "transformer", "refiner"])
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "bad.pt") in msg
    assert "the transformer weight word_embed.weight has shape (64, 8), its config needs (96, 8)" in msg
    assert "config and weights disagree; re-export it" in msg


@pytest.mark.parametrize("depth,problem", [(3, r"the transformer weights lack blocks\.2\."),
                                           (1, r"the transformer weights hold blocks\.1\..*, which its config has no place for")])
def test_stored_depth_that_disagrees_with_the_weights_names_the_first_key(tmp_path, depth, problem):
    _save_all(tmp_path / "bad.pt", make_tiny(), make_tiny([f"transformer.depth={depth}"]).cfg)
    with pytest.raises(UserError, match=problem + ".*config and weights disagree"):
        load_model(tmp_path / "bad.pt", ["vqvae", "transformer"])


def test_pickled_objects_and_truncated_files_get_different_messages(tmp_path):
    torch.save({"format": "restorevar-checkpoint", "obj": NotWeights()}, tmp_path / "obj.pt")
    with pytest.raises(UserError, match="obj.pt is not a plain weights file: it holds pickled Python objects"):
        load_checkpoint(tmp_path / "obj.pt")
    _save(tmp_path / "c.pt", make_tiny())
    whole = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match=r"cannot read checkpoint .*c\.pt \(corrupt or truncated\?\)") as e:
        load_checkpoint(tmp_path / "c.pt")
    assert "\n" not in str(e.value) and "plain weights" not in str(e.value)


class NotWeights:
    pass


def test_resume_from_a_run_folder_of_another_model_is_a_one_line_error(tmp_path):
    from restorevar.train.common import resume_if_possible, save_train_checkpoint

    old = make_tiny()
    save_train_checkpoint(tmp_path, model_cfg=old.cfg, components={"transformer": old.transformer.state_dict()},
                          step=3, optimizers={}, schedulers={}, train_cfg={})
    new = make_tiny(["transformer.width=96"])
    with pytest.raises(UserError, match=r"transformer weight .* has shape .* its config needs") as e:
        resume_if_possible(tmp_path, {"transformer": new.transformer}, {}, {})
    assert "\n" not in str(e.value)
    assert resume_if_possible(tmp_path, {"transformer": make_tiny().transformer}, {}, {}).step == 3
