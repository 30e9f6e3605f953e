"""The weights shipped in restorevar/pretrained: they match their card, load, and clear the thumbnail bar; a
missing or corrupted file is a one-line error naming `make pretrain`."""
import json
import shutil

import pytest
import torch

from restorevar import pretrained
from restorevar.analysis.health import roundtrip_psnr, thumbnail_psnr
from restorevar.data.fetch import sha256_of
from restorevar.data.synth import SynthConfig, synth
from restorevar.errors import UserError
from restorevar.models import RestoreVAR, get_preset
from restorevar.train.common import load_component, load_vqvae
from restorevar.train.prior import load_prior

CARD = pretrained.ROOT / "cpu" / "card.json"


def test_shipped_files_match_their_card_and_load():
    card = json.loads(CARD.read_text())
    # the conditional restoration pretraining is shipped only once it beats the prior on the unseen scenes
    assert {"tokenizer", "prior"} <= set(card["files"]) <= set(pretrained.PARTS) and card["preset"] == "cpu"
    total = 0
    for part, entry in card["files"].items():
        path = pretrained.pretrained_path("cpu", part)
        assert sha256_of(path) == entry["sha256"] and path.stat().st_size == entry["bytes"]
        total += entry["bytes"]
    assert total < 45e6, "the shipped weights are to stay near 40 MB in all"
    cfg = get_preset("cpu")
    vae = load_vqvae(cfg, pretrained.pretrained_path("cpu", "tokenizer"))
    model = RestoreVAR(cfg)
    load_prior(model.transformer, pretrained.pretrained_path("cpu", "prior"))
    assert vae.cfg.shortcut and all(float(b.cross_attn.gain) == 0.0 for b in model.transformer.blocks)
    if "restoration" in card["files"]:  # all of the transformer, the condition path included
        load_component(model, pretrained.pretrained_path("cpu", "restoration"), ["transformer"])
        assert card["stages"]["pretrain_restoration"]["steps"] > 0
    # the card says where the weights came from
    assert card["commit"] and card["corpus"] and all(len(e["source_sha256"]) == 64 for e in card["corpus"])
    assert not any("mate" in e["source"] for e in card["corpus"])


def test_the_shipped_tokenizer_beats_the_bicubic_thumbnail_on_test_scenes(tmp_path):
    """The gate below which no restoration can beat a mild degradation, on clean test-scene crops."""
    synth(tmp_path / "b", SynthConfig(size=64, train_per_degradation=0, test_per_degradation=2), progress=False)
    from restorevar.data.dataset import PairedDataset, PairedTransform

    ds = PairedDataset(tmp_path / "b" / "test.json", PairedTransform(crop=64, mode="test"))
    x = torch.stack([ds.item(i)["clean"] for i in range(len(ds))])
    vae = load_vqvae(get_preset("cpu"), pretrained.pretrained_path("cpu", "tokenizer")).eval()
    rt = roundtrip_psnr(vae, x)
    assert rt["continuous"] > thumbnail_psnr(x, vae.cfg.downsample), rt


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    shutil.copytree(pretrained.ROOT / "cpu", tmp_path / "cpu")
    monkeypatch.setattr(pretrained, "ROOT", tmp_path)
    return tmp_path / "cpu"


def test_a_corrupted_file_is_a_one_line_error_naming_make_pretrain(shipped_copy):
    path = shipped_copy / "prior.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="do not match their card.*make pretrain") as e:
        pretrained.pretrained_path("cpu", "prior")
    assert "\n" not in str(e.value)
    pretrained.pretrained_path("cpu", "tokenizer")  # the other file is still fine


def test_a_missing_file_or_card_is_a_one_line_error_naming_make_pretrain(shipped_copy):
    (shipped_copy / "tokenizer.pt").unlink()
    with pytest.raises(UserError, match="missing.*make pretrain"):
        pretrained.pretrained_path("cpu", "tokenizer")
    (shipped_copy / "card.json").unlink()
    with pytest.raises(UserError, match="no pretrained weights are shipped for preset 'cpu'.*make pretrain"):
        pretrained.pretrained_path("cpu", "prior")
    with pytest.raises(UserError, match="unknown pretrained part"):
        pretrained.pretrained_path("cpu", "decoder")


def test_a_shipped_card_names_the_projects_files_relative_to_it():
    from pipelines.params import ROOT
    from pipelines.ship_pretrained import _relative

    cfg = {"data": {"train_manifest": str(ROOT / "data" / "prepared" / "train.json"), "photos": "data/corpus/corpus.json"},
           "init_from": str(ROOT / "checkpoints" / "pretrain_prior.pt"), "elsewhere": "/opt/x.pt", "n": [3, str(ROOT / "a")]}
    assert _relative(cfg) == {"data": {"train_manifest": "data/prepared/train.json", "photos": "data/corpus/corpus.json"},
                              "init_from": "checkpoints/pretrain_prior.pt", "elsewhere": "/opt/x.pt", "n": [3, "a"]}


def test_the_shipped_card_holds_no_path_of_the_machine_that_made_it():
    def strings(v):
        if isinstance(v, dict):
            for x in v.values():
                yield from strings(x)
        elif isinstance(v, list):
            for x in v:
                yield from strings(x)
        elif isinstance(v, str):
            yield v

    card = json.loads(CARD.read_text())
    absolute = [s for s in strings(card["stages"]) if s.startswith("/")]
    assert absolute == []
    assert "](/" not in (CARD.parent / "MODEL_CARD.md").read_text() and "\"/" not in (CARD.parent / "MODEL_CARD.md").read_text()
