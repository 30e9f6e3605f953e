"""Model-health diagnostics, on hand-made token maps and seeded tiny models where the answer is known."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny
from restorevar.analysis.health import (
    codebook_stats,
    conditioning_sensitivity,
    copy_baseline_accuracy,
    cross_gains,
    greedy_distinct_tokens,
    health_table,
    model_health,
    roundtrip_psnr,
    teacher_forced_accuracy,
    thumbnail_psnr,
)
from restorevar.imaging import mean_psnr
from restorevar.models.transformer import GenerateOutput

TINY_PNS = (1, 2, 3, 4, 6, 8)  # the tiny preset's scales: L = 130 tokens


@pytest.fixture
def distinct_images():
    """Two degraded images that differ in structure (black vs a ramp), so a swap changes the conditioning a lot."""
    ramp_3HW = torch.linspace(-1, 1, 32).expand(3, 32, 32)
    deg = torch.stack([-torch.ones(3, 32, 32), ramp_3HW])
    clean = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7)) * 2 - 1
    return deg, clean


# -- codebook ------------------------------------------------------------------------------------
def test_a_single_code_has_perplexity_one_and_usage_one_over_v():
    idx_list = [torch.full((2, pn, pn), 5) for pn in (1, 2, 3)]
    s = codebook_stats(idx_list, vocab_size=16)
    assert s.usage_S == [1 / 16] * 3 and s.perplexity_S == [1.0] * 3
    assert s.usage == 1 / 16 and s.perplexity == 1.0


def test_uniform_codes_have_perplexity_k_and_pooling_counts_every_token():
    idx_list = [torch.arange(4).view(1, 2, 2), torch.arange(8).repeat(2).view(1, 4, 4)]  # 4 codes once, 8 twice
    s = codebook_stats(idx_list, vocab_size=32)
    assert s.usage_S == [4 / 32, 8 / 32]
    assert s.perplexity_S == pytest.approx([4.0, 8.0], rel=1e-12)
    # pooled: codes 0..3 three times, 4..7 twice, 20 tokens
    p = [3 / 20] * 4 + [2 / 20] * 4
    assert s.usage == 8 / 32
    assert s.perplexity == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)), rel=1e-12)


# -- tokenizer -----------------------------------------------------------------------------------
def test_roundtrip_psnr_is_mean_psnr_of_the_two_decodes(images):
    vq, x = make_tiny().vqvae, images[1]
    with torch.no_grad():
        f = vq.encode(x)
        discrete, continuous = vq.decode(vq.quantize(f).f_hat_BChw), vq.decode(f)
    rt = roundtrip_psnr(vq, x)
    assert rt == {"discrete": mean_psnr(discrete, x), "continuous": mean_psnr(continuous, x)}
    assert rt["discrete"] != rt["continuous"]


def test_diagnostics_leave_a_training_model_untouched(images):
    m = make_tiny().train()
    m.vqvae.decoder.eval()  # mixed flags must come back as they were, not all set to one value
    ema = m.vqvae.quantizer.usage_ema_SV.clone()
    roundtrip_psnr(m.vqvae, images[1])
    model_health(m, [{"degraded": images[0], "clean": images[1]}])
    assert torch.equal(m.vqvae.quantizer.usage_ema_SV, ema)  # a training quantizer would have fed its EMA
    assert m.training and m.vqvae.quantizer.training and m.transformer.training
    assert not m.vqvae.decoder.training and not m.vqvae.decoder.conv_out.training


# -- accuracies ----------------------------------------------------------------------------------
def test_copy_baseline_is_exactly_one_on_identical_images_and_matches_the_tokens_otherwise(images):
    vq = make_tiny().vqvae
    deg, clean = images
    same = copy_baseline_accuracy(vq, clean, clean)
    assert same.per_scale == [1.0] * len(TINY_PNS) and same.overall == 1.0
    acc = copy_baseline_accuracy(vq, deg, clean)
    with torch.no_grad():
        manual = [float((a == b).double().mean()) for a, b in zip(vq.image_to_idx(deg), vq.image_to_idx(clean))]
    assert acc.per_scale == pytest.approx(manual, abs=1e-12)
    assert acc.per_scale[-1] < 1.0  # two independent noise images do not share all their fine tokens


def test_teacher_forced_accuracy_matches_a_manual_count(images):
    m = make_tiny(gains=0.5)
    with torch.no_grad():
        logits_BLV, target_BL = m.teacher_forcing(*images)
    hit_BL = logits_BLV.argmax(-1) == target_BL
    manual, begin = [], 0
    for pn in TINY_PNS:
        manual.append(float(hit_BL[:, begin:begin + pn * pn].double().mean()))
        begin += pn * pn
    acc = teacher_forced_accuracy(m, *images)
    assert acc.per_scale == pytest.approx(manual, abs=1e-6)
    assert acc.overall == pytest.approx(float(hit_BL.double().mean()), abs=1e-6)  # token-weighted = all tokens


def test_teacher_forced_accuracy_on_constructed_logits(monkeypatch, images):
    m = make_tiny()
    L, V = sum(pn * pn for pn in TINY_PNS), m.vqvae.quantizer.vocab_size
    target_BL = torch.zeros(2, L, dtype=torch.long)
    pred_BL = torch.ones(2, L, dtype=torch.long)
    pred_BL[0, :L - 64] = 0  # image 0 right on every scale but the last, image 1 always wrong
    monkeypatch.setattr(m, "teacher_forcing", lambda deg, clean: (F.one_hot(pred_BL, V).float(), target_BL))
    acc = teacher_forced_accuracy(m, *images)
    assert acc.per_scale == [0.5] * 5 + [0.0]
    assert acc.overall == pytest.approx((L - 64) / 2 / L, abs=1e-12)


# -- greedy decoding and conditioning ------------------------------------------------------------
def test_greedy_distinct_tokens_counts_the_decoded_ids(monkeypatch, images):
    m = make_tiny()
    idx_list = [torch.full((2, pn, pn), 3) for pn in TINY_PNS]
    idx_list[-1][1] = 9  # the last scale: 3 in image 0, 9 in image 1
    idx_list[-1][0, 0, 0] = 11
    calls = []

    def fake_generate(cond, quantizer, **kwargs):
        calls.append(kwargs)
        return GenerateOutput(idx_list, torch.zeros(2, 8, 8, 8), torch.zeros(2, 130, 64))

    monkeypatch.setattr(m.transformer, "generate", fake_generate)
    d = greedy_distinct_tokens(m, images[0])
    assert d.per_scale == [1.0] * 5 + [3.0] and d.overall == 3.0
    assert all(c.get("top_k", 0) == 0 and c.get("top_p", 0.0) == 0.0 for c in calls)  # greedy, not sampled


def test_zero_gains_make_the_transformer_ignore_its_conditioning(distinct_images):
    m = make_tiny()  # the gains keep their zero initialisation
    assert cross_gains(m.transformer) == {"cross_gain_0": 0.0, "cross_gain_1": 0.0, "sos_gain": 0.0}
    s = conditioning_sensitivity(m, *distinct_images)
    for key in ("greedy", "tf"):
        assert s[key].per_scale == [0.0] * len(TINY_PNS) and s[key].overall == 0.0


def test_open_gains_make_predictions_depend_on_the_conditioning(distinct_images):
    m = make_tiny(gains=0.5)
    assert cross_gains(m.transformer) == {"cross_gain_0": 0.5, "cross_gain_1": 0.5, "sos_gain": 0.5}
    s = conditioning_sensitivity(m, *distinct_images)
    assert s["greedy"].overall > 0 and s["tf"].overall > 0
    assert all(0 <= v <= 1 for key in s for v in s[key].per_scale)


def test_swapping_needs_two_images(images):
    with pytest.raises(ValueError, match="two images"):
        conditioning_sensitivity(make_tiny(), images[0][:1], images[1][:1])


# -- everything at once --------------------------------------------------------------------------
def expected_keys() -> set[str]:
    per_scale = ["codebook_usage", "codebook_perplexity", "tf_acc", "copy_acc", "greedy_distinct_tokens",
                 "cond_swap_changed", "cond_swap_changed_tf"]
    keys = {"n_images", "roundtrip_psnr_discrete", "roundtrip_psnr_continuous", "thumbnail_psnr", "cross_gain_0", "cross_gain_1",
            "sos_gain", "restored_psnr", "input_psnr", "copy_psnr", "restored_minus_input", "lowfreq_psnr_restored",
            "lowfreq_psnr_input", "lowfreq_restored_minus_input", *per_scale}
    keys |= {f"{name}_scale_{k}" for name in [*per_scale, "patch_num"] for k in range(len(TINY_PNS))}
    return {"health/" + k for k in keys}


def test_model_health_gives_finite_floats_under_the_documented_keys(images):
    m = make_tiny(gains=0.5)
    deg, clean = images
    # a batch of one as well: its swap partner comes from the other batch
    d = model_health(m, [{"degraded": deg, "clean": clean}, {"degraded": deg[:1], "clean": clean[:1]}])
    assert set(d) == expected_keys()
    assert all(type(v) is float and math.isfinite(v) for v in d.values())
    assert d["health/n_images"] == 3.0 and d["health/sos_gain"] == 0.5
    rows = health_table(d)
    assert [r["patch_num"] for r in rows] == list(TINY_PNS) and [r["scale"] for r in rows] == list(range(6))
    assert rows[2]["tf_acc"] == d["health/tf_acc_scale_2"] and rows[5]["perplexity"] > 1


def test_model_health_of_one_batch_agrees_with_the_single_diagnostics(distinct_images):
    m = make_tiny(gains=0.5)
    deg, clean = distinct_images
    d = model_health(m, [{"degraded": deg, "clean": clean}])
    tf, copy = teacher_forced_accuracy(m, deg, clean), copy_baseline_accuracy(m.vqvae, deg, clean)
    swap, distinct = conditioning_sensitivity(m, deg, clean), greedy_distinct_tokens(m, deg)
    rt = roundtrip_psnr(m.vqvae, clean)
    cb = codebook_stats(m.vqvae.image_to_idx(clean), m.vqvae.quantizer.vocab_size)
    for name, result in {"tf_acc": tf, "copy_acc": copy, "cond_swap_changed": swap["greedy"],
                         "cond_swap_changed_tf": swap["tf"], "greedy_distinct_tokens": distinct}.items():
        assert d[f"health/{name}"] == pytest.approx(result.overall, abs=1e-9)
        assert [d[f"health/{name}_scale_{k}"] for k in range(6)] == pytest.approx(result.per_scale, abs=1e-9)
    assert d["health/codebook_perplexity"] == cb.perplexity and d["health/codebook_usage_scale_5"] == cb.usage_S[5]
    assert d["health/roundtrip_psnr_discrete"] == pytest.approx(rt["discrete"], abs=1e-12)
    assert d["health/cond_swap_changed"] > 0  # the comparison above is not between two zeros


def test_thumbnail_psnr_is_exact_on_a_flat_image_and_finite_on_texture():
    flat = torch.full((2, 3, 16, 16), 0.25)
    assert thumbnail_psnr(flat, 4) > 100  # a constant image survives a bicubic round trip up to rounding
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    smooth = torch.nn.functional.interpolate(noise[:, :, ::4, ::4], size=(16, 16), mode="bilinear")
    assert 0 < thumbnail_psnr(noise, 4) < thumbnail_psnr(smooth, 4) < float("inf")
