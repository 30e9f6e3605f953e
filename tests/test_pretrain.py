"""The pretraining tier on the tiny preset: pairs synthesised on the fly, the tokenizer's pixel shortcut, the
unconditional prior, bit-exact resume after a kill, and starting a restoration transformer from a prior."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_train import Recorder

from restorevar.checkpoint import load_checkpoint
from restorevar.config import from_dict
from restorevar.data.corpus import build_corpus
from restorevar.data.pairs import SynthPairs, load_scenes, split_scenes
from restorevar.errors import UserError
from restorevar.models import VQVAE, RestoreVAR, get_preset
from restorevar.models.transformer import reads_condition
from restorevar.train.common import CKPT_NAME
from restorevar.train.prior import PriorTrainConfig, load_prior, train_prior
from restorevar.train.tokenizer import TokenizerTrainConfig, train_tokenizer
from restorevar.train.transformer import TransformerTrainConfig, train_transformer


def _smooth_photo(seed: int, h: int = 160, w: int = 200) -> np.ndarray:
    """A photo-like image: smooth colour fields plus a little texture (random noise would not compress)."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, (3, 5, 3))
    big = np.asarray(Image.fromarray(low.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC), dtype=float)
    return np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    src = tmp_path_factory.mktemp("photos")
    for i in range(4):
        Image.fromarray(_smooth_photo(i)).save(src / f"scene{i}.png")
    out = tmp_path_factory.mktemp("c") / "corpus"
    build_corpus([f"folder:{src}"], out, max_side=160, progress=False)
    return str(out / "corpus.json")


def _cfg(cls, corpus, steps, **kw):
    loop = {"steps": steps, "batch_size": 4, "lr": 2e-3, "ckpt_every": 4, "log_every": 1, "eval_every": 4,
            "val_batches": 1, "flat_fraction": 1.0, "device": "cpu"}
    data = {"pairs": "onthefly", "photos": corpus, "crop": 32, "min_crop_fraction": 0.3, "val_scenes": 1}
    return from_dict(cls, {"model": {"preset": "tiny"}, "data": data, "loop": loop, **kw})


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("tok")
    train_tokenizer(_cfg(TokenizerTrainConfig, corpus, 8), run)
    return str(run / CKPT_NAME)


# ------------------------------------------------------------------------------------------------
# pairs on the fly
# ------------------------------------------------------------------------------------------------
def test_onthefly_pairs_are_a_function_of_seed_step_and_index(corpus):
    scenes = load_scenes(corpus)
    a, b = SynthPairs(scenes, 32, 4, seed=3), SynthPairs(scenes, 32, 4, seed=3)
    x, y = a.batch(7, "cpu"), b.batch(7, "cpu")
    assert torch.equal(x["clean"], y["clean"]) and torch.equal(x["degraded"], y["degraded"])
    assert not torch.equal(a.batch(8, "cpu")["clean"], x["clean"])  # every step draws new pairs
    assert not torch.equal(SynthPairs(scenes, 32, 4, seed=4).batch(7, "cpu")["clean"], x["clean"])
    assert x["clean"].shape == (4, 3, 32, 32) and x["clean"].abs().max() <= 1
    val = a.fixed_batches(2, "cpu")
    assert all(not torch.equal(v["clean"], a.batch(s, "cpu")["clean"]) for v in val for s in range(3))


def test_recolour_permutes_and_scales_the_channels_and_keeps_the_crops_and_degradations(corpus):
    from restorevar.data.pairs import recolour

    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 20, 100, 200  # apart enough that a gain in [0.75, 1.25] names the source
    out = recolour(img, np.random.default_rng(0))
    assert np.array_equal(recolour(img, np.random.default_rng(0)), out) and (out == out[0, 0]).all()
    source = [int(np.argmin([abs(np.log(out[0, 0, k] / v)) for v in (20, 100, 200)])) for k in range(3)]
    assert sorted(source) == [0, 1, 2] and source != [0, 1, 2]  # a real permutation for this seed
    for k, c in enumerate(source):
        assert 0.75 * img[0, 0, c] - 0.5 <= out[0, 0, k] <= 1.25 * img[0, 0, c] + 0.5
    scenes = load_scenes(corpus)
    plain, coloured = SynthPairs(scenes, 32, 4, seed=3), SynthPairs(scenes, 32, 4, seed=3, recolour=True)
    x, y = plain.batch(7, "cpu"), coloured.batch(7, "cpu")
    assert x["id"] == y["id"] and x["degradation"] == y["degradation"]  # the same crops and degradations
    assert not torch.equal(x["clean"], y["clean"])
    assert torch.equal(y["clean"], coloured.batch(7, "cpu")["clean"])


def test_recolour_is_refused_for_manifest_pairs():
    from restorevar.train.common import DataConfig

    with pytest.raises(UserError, match="data.recolour needs data.pairs: onthefly"):
        DataConfig(pairs="manifest", recolour=True).validate()


def test_validation_scenes_are_held_out_whole():
    pix = np.zeros((64, 64, 3), np.uint8)
    from restorevar.data.pairs import Scene

    scenes = [Scene(n, pix) for n in ("a", "b", "b", "c", "d")]  # "b": two pictures of one scene
    for seed in range(6):
        train, val = split_scenes(scenes, 2, seed)
        assert {s.name for s in train}.isdisjoint({s.name for s in val}) and len({s.name for s in val}) == 2
        assert len(train) + len(val) == 5
    with pytest.raises(UserError, match="val_scenes=4"):
        split_scenes(scenes, 4, 0)


def test_a_photo_smaller_than_the_crop_is_refused(corpus):
    with pytest.raises(UserError, match="smaller than the 512 px crop"):
        SynthPairs(load_scenes(corpus), 512, 2, seed=0)


# ------------------------------------------------------------------------------------------------
# the tokenizer's pixel shortcut
# ------------------------------------------------------------------------------------------------
def test_a_fresh_shortcut_tokenizer_is_exactly_the_thumbnail_round_trip():
    torch.manual_seed(0)
    vae = VQVAE(get_preset("tiny", ["vqvae.shortcut=true"]).vqvae).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d = vae.cfg.downsample
    thumb = F.interpolate(F.avg_pool2d(x, d), scale_factor=float(d), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(vae.decode(vae.encode(x)), thumb.clamp(-1, 1), atol=1e-6)
        # the conditioning latent carries the thumbnail too: the degraded image's colour reaches the transformer
        assert torch.allclose(vae.encode_raw(x)[:, :3] - vae.encoder(x)[:, :3], F.avg_pool2d(x, d), atol=1e-6)


def test_without_the_shortcut_the_tokenizer_is_unchanged():
    torch.manual_seed(0)
    vae = VQVAE(get_preset("tiny").vqvae).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(vae.encode(x), vae.quant_conv(vae.encoder(x)))
        assert torch.equal(vae.decode(vae.encode(x)), vae.decoder(vae.post_quant_conv(vae.encode(x))).clamp(-1, 1))


# ------------------------------------------------------------------------------------------------
# the prior, and resume after a kill
# ------------------------------------------------------------------------------------------------
def _weights(path):
    return load_checkpoint(path)["components"]


@pytest.fixture(scope="module")
def prior(corpus, tokenizer, tmp_path_factory):
    run = tmp_path_factory.mktemp("prior")
    train_prior(_cfg(PriorTrainConfig, corpus, 4, tokenizer_checkpoint=tokenizer), run)
    return str(run / CKPT_NAME)


@pytest.mark.parametrize("which", ["tokenizer", "prior", "restoration"])
def test_pretraining_resumes_bit_exactly_after_a_kill(which, corpus, tokenizer, prior, tmp_path):
    if which == "tokenizer":
        cfg, fn = _cfg(TokenizerTrainConfig, corpus, 12), train_tokenizer
    elif which == "prior":
        cfg, fn = _cfg(PriorTrainConfig, corpus, 12, tokenizer_checkpoint=tokenizer), train_prior
    else:  # the conditional restoration pretraining, with every lever of its recipe on
        cfg = _cfg(TransformerTrainConfig, corpus, 12, tokenizer_checkpoint=tokenizer, init_from=prior,
                   aux_weight=1.0, identity_share=0.5, identity_steps=8, loss_weighting="scale")
        cfg.loop.warmup_steps = 3
        fn = train_transformer
    whole = Recorder()
    fn(cfg, tmp_path / "whole", whole)
    with pytest.raises(KeyboardInterrupt):
        fn(cfg, tmp_path / "cut", Recorder(stop_at=8))
    resumed = Recorder()
    fn(cfg, tmp_path / "cut", resumed)
    assert [s for s, _ in resumed.rows[:2]] == [8, 9], "the checkpoint's report again, then the next step"
    a, b = _weights(tmp_path / "whole" / CKPT_NAME), _weights(tmp_path / "cut" / CKPT_NAME)
    for comp in a:
        for k in a[comp]:
            assert torch.equal(a[comp][k], b[comp][k]), f"{comp}.{k} differs after resume"
    assert whole.rows[-1][1]["loss"] == resumed.rows[-1][1]["loss"]


def test_the_prior_learns_and_never_touches_what_reads_the_condition(corpus, tokenizer, tmp_path):
    cfg = _cfg(PriorTrainConfig, corpus, 16, tokenizer_checkpoint=tokenizer)
    rec = Recorder()
    train_prior(cfg, tmp_path / "p", rec)
    losses = rec.series("loss")
    assert sum(losses[-4:]) < sum(losses[:4]), f"the prior's loss did not fall: {losses}"
    torch.manual_seed(cfg.loop.seed)
    fresh = RestoreVAR(get_preset("tiny")).transformer.state_dict()
    trained = _weights(tmp_path / "p" / CKPT_NAME)["transformer"]
    cond = [k for k in fresh if reads_condition(k)]
    assert cond and all(torch.equal(fresh[k], trained[k]) for k in cond)
    assert any(not torch.equal(fresh[k], trained[k]) for k in fresh if not reads_condition(k))
    assert all(float(trained[k]) == 0.0 for k in trained if k.endswith("gain"))


def test_a_restoration_transformer_starts_from_the_prior_whatever_its_conditioning(corpus, tokenizer, tmp_path):
    train_prior(_cfg(PriorTrainConfig, corpus, 4, tokenizer_checkpoint=tokenizer), tmp_path / "p")
    path = tmp_path / "p" / CKPT_NAME
    prior = _weights(path)["transformer"]
    for conditioning in ("continuous", "discrete"):  # discrete has a per-scale condition embedding
        torch.manual_seed(1)
        tr = RestoreVAR(get_preset("tiny", [f"transformer.conditioning={conditioning}"])).transformer
        load_prior(tr, path)
        sd = tr.state_dict()
        assert all(torch.equal(sd[k], prior[k]) for k in sd if not reads_condition(k))
        assert all(float(sd[k]) == 0.0 for k in sd if k.endswith("gain"))
    ape = RestoreVAR(get_preset("tiny", ["transformer.positions=ape"])).transformer
    with pytest.raises(UserError, match="does not fit this transformer"):
        load_prior(ape, path)
