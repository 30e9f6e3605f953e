"""What makes the transformer read its input: the condition path's auxiliary loss, the identity curriculum, the
LR warm-up, the unseen-scene validation split, and the measures that tell a model that reads its input from one
that paints a prior (low-frequency fidelity, the copy_input baseline)."""
import hashlib
import math

import numpy as np
import pytest
import torch

from conftest import make_tiny
from restorevar.analysis.health import model_health
from restorevar.data.pairs import SynthPairs, load_scenes, split_scenes
from restorevar.data.photos import load_photo, photo_path, photos_for
from restorevar.errors import UserError
from restorevar.imaging import lowfreq_psnr_per_image, psnr_per_image
from restorevar.metrics.scoring import copy_input_method, roundtrip_method
from restorevar.train.common import DataConfig, LoopConfig, lr_lambda, make_train_val, seen_val_batches
from restorevar.train.transformer import (
    TransformerTrainConfig,
    condition_read_loss,
    identity_mask,
    token_weights,
    transformer_loss,
)


# -- the auxiliary loss -----------------------------------------------------------------------------
def _grads(m, images, aux_weight):
    m.train()
    m.zero_grad(set_to_none=True)
    loss, _, _ = transformer_loss(m, *images, 0.0, False, "scale", aux_weight)
    loss.backward()
    tr = m.transformer
    return ({n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in tr.named_parameters()},
            float(loss.detach()))


def test_with_the_gates_at_zero_only_the_auxiliary_loss_trains_what_reads_the_condition(images):
    m = make_tiny(seed=3)  # every gate at zero, as a restoration run starts
    plain, _ = _grads(m, images, 0.0)
    aux, _ = _grads(m, images, 1.0)
    reading = [n for n in plain if "cross_attn" in n and not n.endswith("gain")]
    assert reading and all(plain[n].abs().max() == 0 for n in reading)  # the main loss cannot reach them
    assert all(aux[n].abs().max() > 0 for n in reading if "q_proj" in n or "kv_proj" in n or "out_proj" in n)
    # the head is held fixed by it: its gradient is the main loss's, bit for bit (the stream below, which asks
    # the cross-attention its queries, does learn from it)
    for n in ("head.weight", "head.bias"):
        assert torch.equal(plain[n], aux[n]), n


def test_the_auxiliary_loss_is_the_cross_entropy_of_each_blocks_read_through_the_head(images):
    m = make_tiny(seed=1)
    tr = m.transformer
    reads = []
    with torch.no_grad():
        logits, target = m.teacher_forcing(*images, reads=reads)
    assert len(reads) == len(tr.blocks) and reads[0].shape == (2, tr.L, tr.cfg.width)
    w_L = token_weights(tr.patch_nums, "token")
    by_hand = []
    for r in reads:
        lg = tr.head(tr.head_norm(r))
        by_hand.append(torch.nn.functional.cross_entropy(lg.flatten(0, 1), target.flatten()))
    assert float(condition_read_loss(tr, reads, target, w_L)) == pytest.approx(float(torch.stack(by_hand).mean()),
                                                                              rel=1e-5)
    # the reads do not change the forward pass
    with torch.no_grad():
        again, _ = m.teacher_forcing(*images)
    assert torch.equal(logits, again)


def test_the_auxiliary_loss_refuses_activation_checkpointing():
    with pytest.raises(UserError, match="activation_checkpointing"):
        TransformerTrainConfig(aux_weight=1.0, loop=LoopConfig(activation_checkpointing=True)).validate()


# -- the identity curriculum and the warm-up --------------------------------------------------------
def test_identity_pairs_are_a_pure_function_of_the_step_and_fade_out():
    a, b = identity_mask(0, 5, 64, 0.5, 100), identity_mask(0, 5, 64, 0.5, 100)
    assert torch.equal(a, b) and 0 < int(a.sum()) < 64
    assert not torch.equal(a, identity_mask(1, 5, 64, 0.5, 100))
    assert identity_mask(0, 0, 64, 1.0, 100).all()
    assert not identity_mask(0, 100, 64, 1.0, 100).any() and not identity_mask(0, 500, 64, 1.0, 100).any()
    early = sum(int(identity_mask(s, 10, 64, 1.0, 100).sum()) for s in range(20))
    late = sum(int(identity_mask(s, 90, 64, 1.0, 100).sum()) for s in range(20))
    assert early > 3 * late > 0


def test_an_identity_share_needs_its_steps():
    with pytest.raises(UserError, match="identity_steps"):
        TransformerTrainConfig(identity_share=0.5).validate()


def test_the_warm_up_ramps_linearly_then_the_schedule_goes_on():
    f = lr_lambda(LoopConfig(steps=100, warmup_steps=10, flat_fraction=0.5))
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(20) == 1.0 and f(99) < 1.0
    assert lr_lambda(LoopConfig(steps=100))(0) == 1.0  # none by default
    with pytest.raises(UserError, match="warmup_steps"):
        LoopConfig(steps=10, warmup_steps=10).validate()


# -- the unseen-scene validation split --------------------------------------------------------------
def _digests(photo):
    return hashlib.sha256(photo_path(photo).read_bytes()).hexdigest(), hashlib.sha256(load_photo(photo)).hexdigest()


def test_the_validation_scenes_share_no_scene_file_or_pixels_with_training_or_test():
    split = {s: photos_for(s) for s in ("train", "val", "test")}
    assert len(split["val"]) >= 3
    names = {s: {p.name for p in ps} for s, ps in split.items()}
    assert not names["val"] & (names["train"] | names["test"])
    digests = {s: {d for p in ps for d in _digests(p)} for s, ps in split.items()}
    assert not digests["val"] & (digests["train"] | digests["test"])


def test_validation_pairs_come_from_the_unseen_scenes_and_training_pairs_never_do():
    val_names = {p.name for p in photos_for("val")}
    data = DataConfig(pairs="onthefly", photos="shipped", crop=32, val_photos="unseen")
    loop = LoopConfig(steps=2, batch_size=4, val_batches=2)
    batches, val = make_train_val(data, loop, "cpu")
    val_ids = {i.split(":")[0] for b in val for i in b["id"]}
    assert val_ids and val_ids <= val_names
    train_ids = {i.split(":")[0] for s in range(30) for i in batches.batch(s, "cpu")["id"]}
    assert train_ids and not train_ids & val_names
    seen = {i.split(":")[0] for b in seen_val_batches(data, loop, "cpu") for i in b["id"]}
    assert seen and not seen & val_names  # the same-scene validation, kept beside it


def test_a_manifest_run_refuses_the_unseen_scene_option():
    with pytest.raises(UserError, match="onthefly"):
        make_train_val(DataConfig(pairs="manifest", val_photos="unseen"), LoopConfig(), "cpu")
    with pytest.raises(UserError, match="val_photos"):
        make_train_val(DataConfig(pairs="onthefly", val_photos="held_out"), LoopConfig(), "cpu")


def test_the_unseen_scenes_load_as_scenes_of_their_own():
    scenes = load_scenes("unseen")
    train, held = split_scenes(scenes, 0, 0)
    assert len(train) == len(photos_for("val")) and not held
    assert all(s.pixels.dtype == np.uint8 and s.pixels.shape[2] == 3 for s in scenes)
    item = SynthPairs(scenes, 32, 2, 0).item(0, 0)
    assert item["clean"].shape == (3, 32, 32)


# -- low-frequency fidelity -------------------------------------------------------------------------
def test_lowfreq_psnr_sees_colour_and_tone_and_ignores_detail():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 64, 64, generator=g) * 1.6 - 0.8
    # an offset of 0.2 in [-1, 1] is 0.1 on the [0, 1] scale everywhere: 20 dB, at full size and on thumbnails
    shifted = clean + 0.2
    assert lowfreq_psnr_per_image(shifted, clean).tolist() == pytest.approx([20.0, 20.0], abs=1e-5)
    assert psnr_per_image(shifted, clean).tolist() == pytest.approx([20.0, 20.0], abs=1e-5)
    # zero-mean detail inside each 8 x 8 block (a checkerboard) is invisible to it, not to full PSNR
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 2 - 1).float() * 0.1
    detailed = clean + checker
    assert float(lowfreq_psnr_per_image(detailed, clean)[0]) > 100  # up to float32 rounding
    assert float(psnr_per_image(detailed, clean)[0]) < 30
    # brown for green: the right structure with the wrong colours fails it
    green = torch.zeros(1, 3, 64, 64)
    green[:, 1] = 0.6
    brown = green.clone()
    brown[:, 0], brown[:, 1], brown[:, 2] = 0.2, -0.2, -0.6
    mse = (0.1**2 + 0.4**2 + 0.3**2) / 3  # the channels' offsets on the [0, 1] scale: 0.1, 0.4, 0.3
    assert float(lowfreq_psnr_per_image(brown, green)[0]) == pytest.approx(-10 * math.log10(mse), abs=1e-5)


# -- the copy_input baseline ------------------------------------------------------------------------
def test_copy_input_decodes_the_degraded_images_own_tokens(images):
    m = make_tiny(seed=2)
    deg, clean = images
    items = [{"clean": c} for c in deg]  # the clean image equal to the degraded one: copying is the round trip
    copied = torch.stack(copy_input_method(m.vqvae, torch.device("cpu"))(items, deg))
    roundtrip = torch.stack(roundtrip_method(m.vqvae, torch.device("cpu"))(items, deg))
    assert torch.equal(copied, roundtrip)
    with torch.no_grad():
        by_hand = m.vqvae.decode(m.vqvae.quantizer.idx_to_f_hat(m.vqvae.image_to_idx(deg)))
    assert torch.equal(copied, by_hand)
    other = torch.stack(copy_input_method(m.vqvae, torch.device("cpu"))([{}, {}], clean))
    assert not torch.equal(copied, other)  # it reads the degraded image, not the target


def test_model_health_reports_restored_input_and_copy_psnr_and_lowfreq_fidelity(images):
    m = make_tiny(gains=0.5)
    deg, clean = images
    d = model_health(m, [{"degraded": deg, "clean": clean}])
    assert d["health/input_psnr"] == pytest.approx(float(psnr_per_image(deg, clean).mean()))
    assert d["health/lowfreq_psnr_input"] == pytest.approx(float(lowfreq_psnr_per_image(deg, clean).mean()))
    with torch.no_grad():
        gen = m.transformer.generate(m.condition(deg), m.vqvae.quantizer)
        restored = m.vqvae.decode(gen.f_hat_BChw)
        copy = m.vqvae.decode(m.vqvae.quantize(m.vqvae.encode(deg)).f_hat_BChw)
    assert d["health/restored_psnr"] == pytest.approx(float(psnr_per_image(restored, clean).mean()))
    assert d["health/copy_psnr"] == pytest.approx(float(psnr_per_image(copy, clean).mean()))
    assert d["health/lowfreq_psnr_restored"] == pytest.approx(float(lowfreq_psnr_per_image(restored, clean).mean()))
    assert d["health/restored_minus_input"] == pytest.approx(d["health/restored_psnr"] - d["health/input_psnr"])


# -- a cross-attention that starts local --------------------------------------------------------------
def _finest_attention(tr):
    """Block 0's cross-attention weights of the finest scale's queries over the condition tokens (B, H, N, N)."""
    from restorevar.models.attention import _heads
    from restorevar.models.rope import apply_rope

    g = torch.Generator().manual_seed(0)
    cond_BNC, _ = tr.embed_condition(torch.randn(2, tr.n_cond, tr.cvae, generator=g))
    ca = tr.blocks[0].cross_attn
    k, _ = ca.compute_kv(cond_BNC, tr._cond_rope())
    q = ca.cos_scale.q(_heads(ca.q_proj(ca.norm_q(torch.randn(2, tr.L, tr.cfg.width, generator=g))), ca.n_heads))
    q = apply_rope(q, *tr._rope(0, tr.L))
    n = tr.grid**2
    return (q @ k.transpose(-1, -2)).softmax(-1)[:, :, -n:, :]


def test_a_local_start_makes_each_query_read_the_condition_around_its_own_position():
    from restorevar.models import RestoreVAR, get_preset
    from restorevar.train.transformer import local_cross_attention

    torch.manual_seed(0)
    tr = RestoreVAR(get_preset("tiny")).transformer
    G = tr.grid
    r, c = torch.arange(G * G) // G, torch.arange(G * G) % G
    near = ((r[:, None] - r[None]).abs() <= 1) & ((c[:, None] - c[None]).abs() <= 1)
    with torch.no_grad():
        before = float((_finest_attention(tr) * near).sum(-1).mean())
        prior = {n: p.clone() for n, p in tr.named_parameters() if "cross_attn" not in n}
        local_cross_attention(tr, 50.0)
        after = float((_finest_attention(tr) * near).sum(-1).mean())
    uniform = float(near.float().sum(-1).mean()) / (G * G)
    assert before < 2 * uniform and after > 0.5, (before, after, uniform)
    assert all(torch.equal(p, prior[n]) for n, p in tr.named_parameters() if n in prior)  # nothing else touched
    assert all(float(b.cross_attn.gain) == 0.0 for b in tr.blocks)  # the gates stay shut: the paper's start


def test_the_local_start_takes_a_temperature_within_the_cap():
    with pytest.raises(UserError, match="cross_init_scale"):
        TransformerTrainConfig(cross_init_scale=0.5).validate()
    with pytest.raises(UserError, match="cross_init_scale"):
        TransformerTrainConfig(cross_init_scale=101).validate()


# -- the recipe study's command -----------------------------------------------------------------------
def test_the_recipe_study_answers_a_bad_variant_or_folder_in_one_line(tmp_path, capsys):
    from benchmarks.recipe_study import main

    assert main(["--out", str(tmp_path / "s"), "nonsense"]) == 2
    assert main(["--out", str(tmp_path / "s"), "loop.stepz=3"]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["--out", str(tmp_path / "file"), "base"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "unknown variant 'nonsense'" in err[0] and "loop.stepz" in err[1]
    assert "choose another --out" in err[2]
    assert not (tmp_path / "s" / "results.jsonl").exists()


def test_a_recipe_variant_may_hold_a_list_of_several_overrides(tmp_path, capsys):
    from benchmarks.recipe_study import main, parse_variant

    assert parse_variant("model.overrides=[transformer.condition_inject=colocated,transformer.conditioning=discrete]"
                         ",aux_weight=1") == {"model.overrides": ["transformer.condition_inject=colocated",
                                                                   "transformer.conditioning=discrete"],
                                              "aux_weight": 1}
    assert main(["--out", str(tmp_path / "s"), "model.overrides=[a"]) == 2  # unbalanced: one line, no traceback
    assert "is not YAML" in capsys.readouterr().err


@pytest.mark.parametrize("inject", ["colocated_logits", "colocated_shift", "colocated_image_shift"])
def test_copy_init_starts_the_logits_skip_as_the_copy_predictor(inject):
    """With a strong copy start, the greedy teacher-forced tokens are the degraded image's own tokens."""
    from conftest import make_tiny
    from restorevar.train.transformer import copy_initialise

    m = make_tiny([f"transformer.condition_inject={inject}", "transformer.conditioning=discrete"])
    copy_initialise(m, 100.0)
    g = torch.Generator().manual_seed(3)
    deg, clean = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        logits, _ = m.teacher_forcing(deg, clean)
    own = torch.cat([i.flatten(1) for i in m.vqvae.image_to_idx(deg)], dim=1)
    assert torch.equal(logits.argmax(-1), own)


def test_the_latent_shift_moves_the_copy_towards_a_token_and_learns_from_step_one():
    """colocated_shift: a shift by (e_w - e_deg) makes token w the skip's choice everywhere, so a colour change is
    one vector; from the copy start both shift maps get a gradient at once."""
    from conftest import make_tiny
    from restorevar.train.transformer import copy_initialise

    m = make_tiny(["transformer.condition_inject=colocated_shift", "transformer.conditioning=discrete"])
    copy_initialise(m, 100.0)
    t = m.transformer
    g = torch.Generator().manual_seed(4)
    deg, clean = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    w = 5
    with torch.no_grad():  # shift_c(c) = -c + e_w: every token's moved latent is e_w
        t.cond_shift_c.weight.copy_(-torch.eye(t.cvae))
        t.cond_shift_c.bias.copy_(m.vqvae.quantizer.codebook.weight[w])
        logits, _ = m.teacher_forcing(deg, clean)
    assert (logits.argmax(-1) == w).all()
    with torch.no_grad():
        t.cond_shift_c.weight.zero_()
        t.cond_shift_c.bias.zero_()
    logits, target = m.teacher_forcing(deg, clean)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten()).backward()
    assert t.cond_shift_c.weight.grad.abs().max() > 1e-6
    assert t.cond_shift_h.weight.grad.abs().max() > 1e-6


def test_copy_init_is_refused_without_the_discrete_logits_skip():
    from restorevar.errors import UserError
    from restorevar.train.transformer import TransformerTrainConfig

    with pytest.raises(UserError, match="copy_init needs model overrides"):
        TransformerTrainConfig(copy_init=5.0).validate()


def test_shift_loss_is_the_weighted_distance_to_the_target_codes():
    from restorevar.train.transformer import shift_loss

    e_VC = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    target_BL = torch.tensor([[1, 2]])
    w_L = torch.tensor([0.25, 0.75])
    assert shift_loss(e_VC[target_BL], e_VC, target_BL, w_L).item() == 0.0
    m_BLC = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])  # distances 1 and 4
    assert shift_loss(m_BLC, e_VC, target_BL, w_L).item() == pytest.approx(0.25 * 1 + 0.75 * 4)


def test_shift_weight_is_refused_without_the_moved_latent():
    from restorevar.train.transformer import TransformerTrainConfig

    with pytest.raises(UserError, match="shift_weight needs"):
        TransformerTrainConfig(shift_weight=1.0).validate()


@pytest.mark.parametrize("inject", ["colocated_shift", "colocated_image_shift"])
def test_the_shift_loss_reaches_every_shift_map(inject, images):
    from restorevar.train.transformer import copy_initialise, transformer_loss

    m = make_tiny([f"transformer.condition_inject={inject}", "transformer.conditioning=discrete"])
    copy_initialise(m, 50.0)
    parts: dict = {}
    loss, _, _ = transformer_loss(m, *images, 0.0, False, "scale", parts=parts, shift_weight=1.0)
    assert parts["shift"] > 0 and loss.item() == pytest.approx(parts["ce"] + parts["shift"], rel=1e-5)
    loss.backward()
    t = m.transformer
    assert t.cond_shift_c.weight.grad.abs().max() > 0 and t.cond_shift_h.weight.grad.abs().max() > 0
    if inject == "colocated_image_shift":  # the per-image map's output layer, zero at the start, learns at once
        assert t.cond_shift_img.weight.grad.abs().max() > 0


def test_the_image_shift_reads_each_images_statistics_and_moves_its_tokens_alone(images):
    """colocated_image_shift: the per-image scale and offset come from the image's own per-scale mean and RMS, so
    images with other statistics get another correction; an offset of (e_w - e_deg)-style size moves the skip's
    choice for that image only."""
    from restorevar.train.transformer import copy_initialise

    m = make_tiny(["transformer.condition_inject=colocated_image_shift", "transformer.conditioning=discrete"])
    copy_initialise(m, 50.0)
    t = m.transformer
    deg, _ = images
    pair = torch.cat([deg[:1], deg[:1] * 0.2 - 0.7])  # the same photograph, and a dark, flat version of it
    cond = m.condition(pair)
    c_BLCv = t.colocated_BLCv(cond)
    with torch.no_grad():
        assert t.image_affine(c_BLCv)[1].abs().max() == 0  # zero-initialised: the copy predictor at the start
        t.cond_shift_img.weight.normal_(0, 1.0)
        gamma, beta = t.image_affine(c_BLCv)
    assert gamma.shape == beta.shape == (2, 1, t.cvae)
    assert (beta[0] - beta[1]).abs().max() > 1e-3 and (gamma[0] - gamma[1]).abs().max() > 1e-3
    # an offset pointing every latent of the first image at token w (scale -1 cancels the latent itself)
    w = 5
    e_w = m.vqvae.quantizer.codebook.weight[w]
    with torch.no_grad():
        t.cond_shift_img.weight.zero_()
        t.cond_shift_img.bias.copy_(torch.cat([-torch.ones(t.cvae), e_w]))
        idx = torch.cat([i.flatten(1) for i in t.generate(cond[:1], m.vqvae.quantizer).idx_list], 1)
    assert (idx == w).all()


def test_a_shift_without_the_stream_ignores_the_last_block_and_is_refused_elsewhere(images):
    """shift_reads_stream=false: the moved latent no longer depends on the blocks' output (the recipe study's
    check of whether the stream's shift is what re-tones a blurred photograph), and it has no shift map for it."""
    from restorevar.models.transformer import TransformerConfig

    m = make_tiny(["transformer.condition_inject=colocated_shift", "transformer.conditioning=discrete",
                   "transformer.shift_reads_stream=false"])
    t = m.transformer
    assert not hasattr(t, "cond_shift_h")
    with torch.no_grad():
        t.cond_shift_c.bias.fill_(0.5)
    c_BlCv = torch.randn(2, 3, t.cvae, generator=torch.Generator().manual_seed(0))
    h1, h2 = (torch.randn(2, 3, t.cfg.width, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    assert torch.equal(t.skip_input(c_BlCv, h1), t.skip_input(c_BlCv, h2))
    assert torch.equal(t.skip_input(c_BlCv, h1), c_BlCv + 0.5)
    with pytest.raises(UserError, match="shift_reads_stream=false is a setting of the shifts"):
        TransformerConfig(condition_inject="colocated_logits", shift_reads_stream=False).validate()


def test_a_checkpoint_from_before_shift_reads_stream_loads_as_reading_the_stream():
    from restorevar.checkpoint import stored_config

    cfg = stored_config({"config": {"transformer": {"condition_inject": "colocated_shift", "cross_norm_eps": 1e-5}}})
    assert cfg["transformer"]["shift_reads_stream"] is True
