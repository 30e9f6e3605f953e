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
    rng_state,
    save_checkpoint,
    set_rng_state,
)
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
