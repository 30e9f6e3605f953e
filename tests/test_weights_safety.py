"""Weight files are unpickled only after a full SHA-256 match, with weights_only=True, by our own code.

A planted pickle in the cache (``TORCH_HOME``) that would write a marker file when unpickled must never run;
torchvision, lpips and pyiqa would each unpickle such a file with weights_only=False if they were handed it.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import lpips
import numpy as np
import pytest
import torch

from restorevar.data import weights
from restorevar.errors import UserError
from restorevar.metrics import MetricProtocol, MetricSuite
from restorevar.metrics.iqa import lpips_alex
from restorevar.train.losses import make_lpips

ALEX = weights.BY_NAME["alexnet"].relpath
LIN = weights.BY_NAME["lpips_alex"].relpath
MUSIQ = weights.BY_NAME["musiq_koniq"].relpath
BUNDLED_LIN = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"  # shipped in the lpips wheel


class _Plant:
    """Unpickling this writes ``marker``: what a hostile weight file can do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def _plant(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"features.0.weight": _Plant(marker)}, path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _register(monkeypatch, cache: Path, *names: str) -> None:
    """A test-only spec table: the named weights get the digest and size of the files now in ``cache``."""
    specs = tuple(dataclasses.replace(s, sha256=_digest(cache / s.relpath), sha256_prefix=None,
                                      size=(cache / s.relpath).stat().st_size) if s.name in names else s
                  for s in weights.WEIGHTS)
    monkeypatch.setattr(weights, "WEIGHTS", specs)
    monkeypatch.setattr(weights, "BY_NAME", {s.name: s for s in specs})


def _suite(names, cache):
    return MetricSuite(list(names), MetricProtocol("rgb", 0, "resize", 32), weights_cache=cache)


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "pwned"


@pytest.fixture
def fake_lpips(tmp_path):
    """A small stand-in for the two LPIPS files: AlexNet's feature layers (no classifier) and linear layers,
    random but seeded, in torchvision's and lpips' key layout."""
    import torchvision

    cache = tmp_path / "cache"
    g = torch.Generator().manual_seed(0)
    feats = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in torchvision.models.alexnet().state_dict().items()
             if k.startswith("features.")}
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate((64, 192, 384, 256, 256))}
    for rel, sd in ((ALEX, feats), (LIN, lin)):
        (cache / rel).parent.mkdir(parents=True, exist_ok=True)
        torch.save(sd, cache / rel)
    return cache, feats, lin


def test_the_plant_is_live_and_torchvision_alone_would_run_it(tmp_path, marker, monkeypatch):
    # the control: without our checks, torchvision unpickles whatever sits at its cache path
    import torchvision

    home = tmp_path / "torch_home"
    _plant(home / ALEX, marker)
    monkeypatch.setenv("TORCH_HOME", str(home))
    with pytest.raises(Exception):  # noqa: B017 - whatever it raises after running the payload
        torchvision.models.alexnet(weights="IMAGENET1K_V1")
    assert marker.read_text() == "ran"


def test_a_planted_pickle_at_the_alexnet_path_never_runs(tmp_path, marker, monkeypatch):
    home = tmp_path / "torch_home"
    _plant(home / ALEX, marker)
    (home / LIN).parent.mkdir(parents=True)
    (home / LIN).write_bytes(BUNDLED_LIN.read_bytes())  # the genuine linear layers: only AlexNet is bad
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("RESTOREVAR_WEIGHTS", raising=False)

    ok, reason = _suite(["psnr", "lpips"], home).available["lpips"]
    assert not ok and "alexnet refused" in reason and "delete the refused file" in reason
    assert "lpips_alex" not in reason  # the genuine file is accepted
    with pytest.raises(UserError, match="perceptual loss needs LPIPS weights: unavailable: alexnet refused"):
        make_lpips(torch.device("cpu"))
    with pytest.raises(weights.WeightRefused, match="refused: size"):
        weights.load_verified(weights.BY_NAME["alexnet"], home)
    assert not marker.exists()


def test_a_pickle_whose_digest_is_registered_is_still_not_unpickled(tmp_path, marker, monkeypatch):
    # even a file that passes the checksum (a compromised mirror and registry) is read with weights_only=True
    cache = tmp_path / "cache"
    _plant(cache / ALEX, marker)
    (cache / LIN).parent.mkdir(parents=True)
    (cache / LIN).write_bytes(BUNDLED_LIN.read_bytes())
    _register(monkeypatch, cache, "alexnet")
    with pytest.raises(weights.WeightRefused) as e:
        weights.load_verified(weights.BY_NAME["alexnet"], cache)
    assert e.value.reason.startswith("refused: not a plain weights file")
    assert "corrupt" not in str(e.value)
    ok, reason = _suite(["lpips"], cache).available["lpips"]
    assert not ok and "alexnet refused: not a plain weights file" in reason and "corrupt" not in reason
    monkeypatch.setenv("RESTOREVAR_WEIGHTS", str(cache))
    with pytest.raises(UserError, match="alexnet refused: not a plain weights file"):
        make_lpips(torch.device("cpu"))
    assert not marker.exists()


def test_the_musiq_file_goes_through_the_same_loader(tmp_path, marker, monkeypatch):
    cache = tmp_path / "cache"
    _plant(cache / MUSIQ, marker)
    _register(monkeypatch, cache, "musiq_koniq")
    ok, reason = _suite(["musiq"], cache).available["musiq"]
    assert not ok and "musiq_koniq refused: not a plain weights file" in reason
    assert not marker.exists()


def test_right_name_wrong_content_is_refused_by_checksum(tmp_path, fake_lpips, monkeypatch):
    cache, _, _ = fake_lpips
    _register(monkeypatch, cache, "alexnet", "lpips_alex")
    blob = bytearray((cache / ALEX).read_bytes())
    blob[-100] ^= 0xFF  # same name, same size, one byte changed
    (cache / ALEX).write_bytes(bytes(blob))
    problem = weights.load_problem(weights.BY_NAME["alexnet"], cache)
    assert problem.startswith("refused: sha256 checksum") and "does not match" in problem
    with pytest.raises(weights.WeightRefused, match="sha256 checksum .* does not match"):
        lpips_alex(cache)
    ok, reason = _suite(["lpips"], cache).available["lpips"]
    assert not ok and "alexnet refused: sha256 checksum" in reason and "lpips_alex" not in reason


def test_a_weight_without_a_full_digest_is_refused_even_when_present(tmp_path, fake_lpips, monkeypatch):
    cache, _, _ = fake_lpips
    _register(monkeypatch, cache, "lpips_alex")
    prefix_only = dataclasses.replace(weights.BY_NAME["alexnet"], sha256=None, sha256_prefix=_digest(cache / ALEX)[:8],
                                      size=None)
    specs = tuple(prefix_only if s.name == "alexnet" else s for s in weights.WEIGHTS)
    monkeypatch.setattr(weights, "WEIGHTS", specs)
    monkeypatch.setattr(weights, "BY_NAME", {s.name: s for s in specs})
    assert weights.verify(prefix_only, cache / ALEX) is None  # the prefix matches: the file is the one meant...
    with pytest.raises(weights.WeightRefused, match="no full digest known"):  # ...yet it is never unpickled
        weights.load_verified(prefix_only, cache)
    ok, reason = _suite(["lpips"], cache).available["lpips"]
    assert not ok and "alexnet refused: no full digest known" in reason and "never loaded" in reason


def test_make_lpips_offline_loads_verified_weights_and_nothing_from_torch_home(tmp_path, fake_lpips, marker,
                                                                               monkeypatch):
    cache, feats, lin = fake_lpips
    _register(monkeypatch, cache, "alexnet", "lpips_alex")
    evil = tmp_path / "torch_home"  # where torchvision and lpips would look: poisoned
    _plant(evil / ALEX, marker)
    _plant(evil / "hub" / "checkpoints" / "vgg16-397923af.pth", marker)
    monkeypatch.setenv("TORCH_HOME", str(evil))
    monkeypatch.setenv("RESTOREVAR_WEIGHTS", str(cache))

    net = make_lpips(torch.device("cpu"))
    assert not marker.exists()
    assert isinstance(net, lpips.LPIPS) and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    layer = lambda s, i: getattr(getattr(net.net, s), i)  # lpips names slice children by torchvision's index
    assert torch.equal(layer("slice1", "0").weight, feats["features.0.weight"])
    assert torch.equal(layer("slice2", "3").weight, feats["features.3.weight"])
    assert torch.equal(layer("slice5", "10").bias, feats["features.10.bias"])
    for k in range(5):
        assert torch.equal(net.lins[k].model[1].weight, lin[f"lin{k}.model.1.weight"])
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        assert torch.all(net(x, x) == 0) and torch.all(net(x, y) > 0)


def test_a_file_with_the_right_digest_but_foreign_keys_is_refused(tmp_path, fake_lpips, monkeypatch):
    cache, feats, _ = fake_lpips
    torch.save({**feats, "features.99.weight": torch.zeros(1)}, cache / ALEX)
    _register(monkeypatch, cache, "alexnet", "lpips_alex")
    with pytest.raises(weights.WeightRefused, match="alexnet .*does not fit the network"):
        lpips_alex(cache)


def test_the_metric_scores_as_pyiqa_did_with_the_same_weights(tmp_path, fake_lpips, monkeypatch):
    """The LPIPS metric moved from pyiqa's network to the lpips package's: same numbers on the same weights."""
    import torchvision

    from restorevar.metrics.iqa import _pyiqa

    cache, feats, _ = fake_lpips
    _register(monkeypatch, cache, "alexnet", "lpips_alex")
    ours = _suite(["lpips"], cache)
    assert ours.available["lpips"] == (True, "available")

    untrained = torchvision.models.alexnet

    def alexnet_with_fake_features(**_):
        m = untrained()
        m.features.load_state_dict({k.removeprefix("features."): v for k, v in feats.items()})
        return m

    pyiqa = _pyiqa()
    with monkeypatch.context() as m:  # pyiqa's AlexNet always asks torchvision for the ImageNet weights
        m.setattr(torchvision.models, "alexnet", alexnet_with_fake_features)
        ref = pyiqa.create_metric("lpips", device="cpu", as_loss=False, pretrained_model_path=str(cache / LIN)).eval()
    rng = np.random.default_rng(0)
    tgt = torch.from_numpy(rng.random((3, 3, 48, 48))).float()
    pred = (tgt + torch.from_numpy(rng.normal(0, 0.1, (3, 3, 48, 48))).float()).clamp(0, 1)
    got = ours.score(pred, tgt)["lpips"]
    with torch.no_grad():
        want = ref(pred, tgt).reshape(-1).double().numpy()
    assert got.shape == (3,) and np.all(got > 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_musiq_loads_a_verified_state_dict_into_pyiqas_network(tmp_path, monkeypatch):
    from restorevar.metrics.iqa import _pyiqa

    net = _pyiqa().create_metric("musiq", device="cpu", as_loss=False, pretrained=False,
                                 pretrained_model_path=None).net
    # one constant per tensor (stride-0, so the file stays tiny), saved with DataParallel's prefix as some are
    values = {k: float(i) / 1000 for i, k in enumerate(net.state_dict())}
    cache = tmp_path / "cache"
    (cache / MUSIQ).parent.mkdir(parents=True)
    torch.save({f"module.{k}": torch.tensor(v).expand(t.shape) for (k, t), v in zip(net.state_dict().items(),
                                                                                   values.values())}, cache / MUSIQ)
    _register(monkeypatch, cache, "musiq_koniq")
    suite = _suite(["musiq"], cache)
    assert suite.available["musiq"] == (True, "available")
    loaded = suite._metrics["musiq"].net.state_dict()
    assert all(torch.all(loaded[k] == torch.tensor(v, dtype=loaded[k].dtype)) for k, v in values.items())


def test_the_real_registry_pins_full_digests_for_every_lpips_file():
    for name in ("alexnet", "lpips_alex"):
        spec = weights.BY_NAME[name]
        assert spec.sha256 and len(spec.sha256) == 64 and spec.size
    # the linear layers pinned for LPIPS are byte for byte the ones the lpips wheel ships
    assert _digest(BUNDLED_LIN) == weights.BY_NAME["lpips_alex"].sha256
    assert BUNDLED_LIN.stat().st_size == weights.BY_NAME["lpips_alex"].size
