"""Self-describing checkpoints: atomic writes, safe loading, config checks, RNG state."""
import os
import random
import subprocess
import sys
from pathlib import Path

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


# -- what a file describes is checked before anything is built from it ---------------------------
def _edit_saved(path, edit):
    """Rewrite a saved checkpoint with ``edit`` applied to what ``torch.load`` reads (past the typed config)."""
    ck = torch.load(path, weights_only=True)
    edit(ck)
    torch.save(ck, path)
    return path


def _whole(path, m=None):
    m = m or make_tiny()
    save_checkpoint(path, config=m.cfg, step=1,
                    components={c: getattr(m, c).state_dict() for c in ("vqvae", "transformer", "refiner")})
    return path


def _huge_transformer(ck):
    # every field within its bounds; the transformer alone some 40 billion weights
    ck["config"]["transformer"].update(depth=64, width=4096, heads=64, mlp_ratio=16.0)


def _only_vqvae(ck):
    ck["components"] = {"vqvae": ck["components"]["vqvae"]}


def _meta_bytes(ck) -> int:
    """What the model a checkpoint's config describes would take in float32, counted on the meta device."""
    from restorevar.models import RestoreVAR

    with torch.device("meta"):
        model = RestoreVAR(config_from_checkpoint(ck))
    return 4 * sum(t.numel() for t in (*model.parameters(), *model.buffers()))


# The process's peak resident size after the imports (torch alone takes several hundred MB) and after the load,
# in KiB. VmHWM, not getrusage's ru_maxrss: that one keeps the peak of the process before exec, here the whole
# pytest process that forked it.
_PEAK = """
import re, sys
from pathlib import Path
from restorevar.checkpoint import load_checkpoint
from restorevar.errors import UserError
from restorevar.models import RestoreVAR

def peak():
    return int(re.search(r"VmHWM:\\s*(\\d+) kB", Path("/proc/self/status").read_text()).group(1))

print("imported_kib", peak())
try:
    load_checkpoint(sys.argv[1])
    print("loaded")
except UserError as e:
    print("refused:", e)
print("peak_kib", peak())
"""


@pytest.mark.parametrize("edit,refusal", [
    (_huge_transformer, "the transformer weight word_embed.weight has shape (64, 8), its config needs (4096, 8)"),
    (lambda ck: (_huge_transformer(ck), _only_vqvae(ck)), "more than the 1,073,741,824 a checkpoint may describe"),
], ids=["weights-too-small-for-it", "its-weights-absent"])
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak from Linux's /proc")
def test_a_small_file_claiming_a_huge_model_is_refused_before_any_allocation(tmp_path, edit, refusal):
    path = _edit_saved(_whole(tmp_path / "bad.pt"), edit)
    claimed = _meta_bytes(torch.load(path, weights_only=True))
    assert path.stat().st_size < 5e6 and claimed > 100e9  # a few MB that claim over 100 GB
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root)}).stdout
    assert f"refused: checkpoint {path}: " in out and refusal in out, out
    imported, peak = (int(out.split(f"{k}_kib ", 1)[1].split()[0]) * 1024 for k in ("imported", "peak"))
    print(f"claimed {claimed / 1e9:.0f} GB; peak resident {imported / 1e6:.0f} MB after the imports, "
          f"{peak / 1e6:.0f} MB after refusing the file")
    # the meta-device build imports more of torch, once (about 200 MB); the claimed model is over 100 GB
    assert peak - imported < 0.5e9, f"the load grew the process by {(peak - imported) / 1e6:.0f} MB"
    assert peak < 1.5e9  # about 0.95 GB where torch's import takes 0.75 GB


def test_the_largest_model_the_bounds_allow_is_counted_on_the_meta_device_at_once():
    import time

    from restorevar.checkpoint import _meta_model
    from restorevar.models import get_preset

    cfg = get_preset("paper", ["transformer.depth=64", "transformer.width=4096", "transformer.heads=64",
                               "transformer.mlp_ratio=16", "refiner.depth=64", "refiner.width=4096"])
    start = time.perf_counter()
    parts = _meta_model(cfg, discriminator=True)
    assert sum(p.numel() for m in parts.values() for p in m.parameters()) > 4e10
    assert time.perf_counter() - start < 30  # a tenth of a second when warm; the first meta build imports more


@pytest.mark.parametrize("edit,message", [
    (lambda ck: ck.__setitem__("version", "1"), "'version' must be an integer format version, got str"),
    (lambda ck: ck.pop("version"), "'version' must be an integer format version, got NoneType"),
    (lambda ck: ck.__setitem__("version", 0), "'version' must be between 1 and 1, got 0"),
    (lambda ck: ck.__setitem__("version", 2), "was written by a newer RestoreVAR (format v2)"),
    (lambda ck: ck.__setitem__("components", 7), "'components' must be a mapping of component names to weights, got int"),
    (lambda ck: ck.__setitem__("components", ["vqvae"]),
     "'components' must be a mapping of component names to weights, got list"),
    (lambda ck: ck["components"].__setitem__("ema", {}), "'components' holds 'ema', which is none of vqvae, "),
    (lambda ck: ck["components"].__setitem__("refiner", [torch.zeros(1)]),
     "the refiner weights are not a mapping of names to tensors"),
    (lambda ck: ck.__setitem__("step", -1), "'step' must be a non-negative integer, got -1"),
    (lambda ck: ck.__setitem__("rng", [1]), "'rng' must be a mapping, got list"),
    (lambda ck: ck.__setitem__("config", "tiny"), "'config' must be a mapping of config sections, got str"),
    (lambda ck: ck["config"]["transformer"].__setitem__("depth", 100_000),
     "transformer.depth must be between 1 and 64, got 100000"),
    (lambda ck: ck["config"]["transformer"].__setitem__("heads", 0), "transformer.heads must be between 1 and 256"),
    (lambda ck: ck["config"]["transformer"].__setitem__("depth", 2.0), "transformer.depth: expected an integer"),
    (lambda ck: ck["config"]["transformer"].__setitem__("positions", "alibi"), "transformer.positions: 'alibi' is not"),
    (lambda ck: ck["config"]["transformer"].__setitem__("dropout", 0.1), "unknown config key(s) transformer.dropout"),
    (lambda ck: ck["config"]["vqvae"].__setitem__("vocab_size", 2**31), "vqvae.vocab_size must be between 2 and 65536"),
    (lambda ck: ck["config"]["vqvae"].__setitem__("vocab_size", 2**70), "config.vqvae.vocab_size is an integer beyond"),
    (lambda ck: ck["config"]["vqvae"].__setitem__("patch_nums", []), "vqvae.patch_nums length must be between 1 and 64"),
    (lambda ck: ck["config"]["vqvae"].__setitem__("ch_mult", [1] * 1000), "config.vqvae.ch_mult holds 1000 items"),
    (lambda ck: ck["config"]["vqvae"].__setitem__("beta", float("nan")), "vqvae.beta: expected a finite number"),
    (lambda ck: ck["config"]["refiner"].__setitem__("depth", torch.tensor(2)),
     "config.refiner.depth holds a Tensor, which no config field takes"),
    (lambda ck: ck["config"]["discriminator"].__setitem__("n_layers", 40), "discriminator.n_layers must be between 1"),
    (lambda ck: ck["config"].__setitem__(3, {}), "config holds a key that is not a field name (int)"),
])
def test_a_checkpoint_that_does_not_fit_the_schema_is_a_one_line_error(tmp_path, edit, message):
    path = _edit_saved(_whole(tmp_path / "bad.pt"), edit)
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    text = str(e.value)
    assert message in text and str(path) in text and "\n" not in text, text


@pytest.mark.parametrize("component,key,value,problem", [
    ("transformer", "blocks.0.ffn.fc1.weight", float("nan"), "holds NaN"),
    ("refiner", "proj_out.weight", float("inf"), "holds infinite values"),
    ("vqvae", "quantizer.codebook.weight", -float("inf"), "holds infinite values"),
])
def test_weights_that_are_not_finite_are_refused(tmp_path, component, key, value, problem):
    path = _edit_saved(_whole(tmp_path / "bad.pt"), lambda ck: ck["components"][component][key].fill_(value))
    with pytest.raises(UserError, match=rf"bad\.pt: the {component} weight {key} {problem}; the file is damaged"):
        load_model(path, ["vqvae", "transformer", "refiner"])


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool, torch.float64, torch.complex64])
def test_weights_must_be_float32_float16_or_bfloat16(tmp_path, dtype):
    def cast(ck):
        sd = ck["components"]["transformer"]
        sd["head.weight"] = sd["head.weight"].to(dtype)

    path = _edit_saved(_whole(tmp_path / "bad.pt"), cast)
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(UserError, match=rf"the transformer weight head\.weight is {name}, not float32, float16 or bf"):
        load_checkpoint(path)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_still_load(tmp_path, dtype):
    m = make_tiny()

    def halve(ck):
        for sd in ck["components"].values():
            for k in sd:
                sd[k] = sd[k].to(dtype)

    path = _edit_saved(_whole(tmp_path / "half.pt", m), halve)
    loaded = load_model(path, ["vqvae", "transformer", "refiner"])
    want = m.transformer.head.weight.to(dtype).float()
    assert torch.equal(loaded.transformer.head.weight, want)


def test_a_discriminator_keeps_its_integer_counters_and_is_checked_like_the_rest(tmp_path):
    from restorevar.models import PatchGAN

    m = make_tiny()
    disc = PatchGAN(m.cfg.discriminator).state_dict()
    assert disc["net.3.num_batches_tracked"].dtype == torch.int64
    save_checkpoint(tmp_path / "dec.pt", config=m.cfg, components={"vqvae": m.vqvae.state_dict(), "discriminator": disc})
    assert set(load_checkpoint(tmp_path / "dec.pt")["components"]) == {"vqvae", "discriminator"}
    # a counter stored as a float is not what the model keeps
    _edit_saved(tmp_path / "dec.pt",
                lambda ck: ck["components"]["discriminator"].__setitem__("net.3.num_batches_tracked", torch.tensor(0.0)))
    with pytest.raises(UserError, match=r"discriminator weight net\.3\.num_batches_tracked is float32, its model keeps "
                                        r"it as int64"):
        load_checkpoint(tmp_path / "dec.pt")
    _edit_saved(tmp_path / "dec.pt", lambda ck: ck["components"]["discriminator"].pop("net.3.num_batches_tracked"))
    with pytest.raises(UserError, match=r"the discriminator weights lack net\.3\.num_batches_tracked"):
        load_checkpoint(tmp_path / "dec.pt")


def test_a_stored_component_must_fit_its_config_even_when_no_command_loads_it(tmp_path):
    # a tokenizer checkpoint (vqvae only) whose config and weights disagree is refused on reading, not when a
    # later stage builds from it
    m = make_tiny()
    save_checkpoint(tmp_path / "tok.pt", config=make_tiny(["vqvae.z_channels=16"]).cfg,
                    components={"vqvae": m.vqvae.state_dict()})
    with pytest.raises(UserError, match=r"the vqvae weight .* has shape .*, its config needs .*config and weights"):
        load_checkpoint(tmp_path / "tok.pt")


def _promptir_file(path):
    from restorevar.baselines.promptir import PromptIR, promptir_preset

    torch.manual_seed(0)
    net = PromptIR(promptir_preset("tiny"))
    save_checkpoint(path, config=net.cfg, components={"promptir": net.state_dict()}, step=3)
    return net


def test_a_baselines_checkpoint_names_its_model_and_a_restorevar_one_stays_as_it_was(tmp_path):
    """A PromptIR file says so ("model"), is checked against PromptIR's own shapes, and is refused by name where a
    RestoreVAR model is built from it; RestoreVAR's files hold no such key, so they keep their bytes."""
    from restorevar.checkpoint import model_config

    net = _promptir_file(tmp_path / "p.pt")
    ck = load_checkpoint(tmp_path / "p.pt")
    assert ck["model"] == "promptir" and model_config(ck) == net.cfg
    with pytest.raises(UserError, match="holds a promptir model, not RestoreVAR; give a RestoreVAR checkpoint"):
        load_model(tmp_path / "p.pt", ["vqvae"])
    _save(tmp_path / "r.pt", make_tiny())
    assert "model" not in torch.load(tmp_path / "r.pt", weights_only=True)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda ck: ck.update(model="diffusion"), "'model' must be one of restorevar, promptir, got 'diffusion'"),
    (lambda ck: ck.update(model=3), "'model' must be one of restorevar, promptir, got int"),
    (lambda ck: ck["components"].update(vqvae={}), "'components' holds 'vqvae', which is none of promptir"),
    (lambda ck: ck["config"].update(dim=12), "the promptir weight embed.weight has shape"),  # another width
    (lambda ck: ck.pop("model"), "holds 'promptir', which is none of vqvae"),  # then read as RestoreVAR
])
def test_a_damaged_baseline_checkpoint_is_one_line(edit, message, tmp_path):
    _promptir_file(tmp_path / "p.pt")
    ck = torch.load(tmp_path / "p.pt", weights_only=True)
    edit(ck)
    torch.save(ck, tmp_path / "p.pt")
    with pytest.raises(UserError, match=message):
        load_checkpoint(tmp_path / "p.pt")
