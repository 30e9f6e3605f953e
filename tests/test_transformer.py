"""The RestoreVAR transformer: mask, cached inference, conditioning gates, variants."""
import pytest
import torch

from conftest import make_tiny

VARIANTS = [("rope2d", "continuous"), ("rope2d", "discrete"), ("ape", "continuous"), ("ape", "discrete")]


def test_mask_lets_scale_k_see_exactly_scales_up_to_k():
    m = make_tiny()
    t = m.transformer
    lvl = t.lvl_L
    for i in range(t.L):
        seen = set(lvl[t.mask_LL[i]].tolist())
        assert seen == set(range(int(lvl[i]) + 1))
    # bidirectional within a scale: the last token of scale 2 sees the first one
    pn = t.patch_nums
    s2 = sum(p * p for p in pn[:2])
    assert t.mask_LL[s2 + pn[2] ** 2 - 1, s2] and t.mask_LL[s2, s2 + pn[2] ** 2 - 1]


@pytest.mark.parametrize("positions,conditioning", VARIANTS)
def test_cached_inference_matches_teacher_forcing(positions, conditioning, images):
    m = make_tiny([f"transformer.positions={positions}", f"transformer.conditioning={conditioning}"], gains=0.7)
    deg, _ = images
    cond = m.condition(deg)
    gen = m.transformer.generate(cond, m.vqvae.quantizer, return_logits=True)
    x_in = m.vqvae.quantizer.idx_to_teacher_input(gen.idx_list)
    with torch.no_grad():
        logits, hidden = m.transformer(cond, x_in, return_hidden=True)
    begin = 0
    for k, pn in enumerate(m.transformer.patch_nums):
        end = begin + pn * pn
        torch.testing.assert_close(logits[:, begin:end], gen.logits_list[k], atol=2e-5, rtol=1e-5)
        assert torch.equal(logits[:, begin:end].argmax(-1), gen.idx_list[k].flatten(1))
        begin = end
    torch.testing.assert_close(hidden, gen.hidden_BLC, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(gen.f_hat_BChw, m.vqvae.quantizer.idx_to_f_hat(gen.idx_list), atol=1e-5, rtol=1e-5)


def test_precomputed_cross_kv_changes_nothing(images):
    m = make_tiny(gains=0.9)
    cond = m.condition(images[0])
    a = m.transformer.generate(cond, m.vqvae.quantizer, precompute_cross_kv=True, return_logits=True)
    b = m.transformer.generate(cond, m.vqvae.quantizer, precompute_cross_kv=False, return_logits=True)
    for la, lb in zip(a.logits_list, b.logits_list):
        torch.testing.assert_close(la, lb, atol=0, rtol=0)
    assert all(torch.equal(x, y) for x, y in zip(a.idx_list, b.idx_list))


@pytest.mark.parametrize("inject", ["colocated", "colocated_logits", "colocated_shift", "colocated_image_shift"])
@pytest.mark.parametrize("conditioning", ["continuous", "discrete"])
def test_colocated_injection_matches_between_cached_and_teacher_forced(conditioning, inject, images):
    m = make_tiny([f"transformer.conditioning={conditioning}", f"transformer.condition_inject={inject}"], gains=0.3)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in m.transformer.named_parameters():
            if name.startswith(("cond_inject.", "cond_shift")):
                p.normal_(0, 0.5)
    cond = m.condition(images[0])
    gen = m.transformer.generate(cond, m.vqvae.quantizer, return_logits=True)
    with torch.no_grad():
        logits = m.transformer(cond, m.vqvae.quantizer.idx_to_teacher_input(gen.idx_list))
    torch.testing.assert_close(logits, torch.cat(gen.logits_list, dim=1), atol=2e-5, rtol=1e-5)


def test_colocated_injection_is_the_area_mean_at_each_scale(images):
    """Each token's co-located latent is the degraded latent averaged over exactly its own cell."""
    m = make_tiny(["transformer.condition_inject=colocated"])
    t = m.transformer
    with torch.no_grad():
        cond = m.condition(images[0])
        got_BLCv = t.colocated_BLCv(cond)
    f = cond.transpose(1, 2).reshape(cond.shape[0], t.cvae, t.grid, t.grid)
    begin = 0
    for pn in t.patch_nums:
        step = -(-t.grid // pn)  # the top-left cell of this scale; cells overlap where pn does not divide the grid
        want = f[:, :, :step, :step].mean(dim=(2, 3))
        torch.testing.assert_close(got_BLCv[:, begin], want, atol=1e-5, rtol=1e-5)
        begin += pn * pn


@pytest.mark.parametrize("inject", ["colocated", "colocated_logits", "colocated_shift", "colocated_image_shift"])
def test_colocated_injection_starts_as_the_paper_model_and_learns_from_step_one(inject, images):
    """Zero-initialised, it changes nothing at the start; its projection gets a gradient at once, unlike
    the gated cross-attention's weights."""
    plain = make_tiny()
    m = make_tiny([f"transformer.condition_inject={inject}"])
    m.load_state_dict({**plain.state_dict(), **{k: v for k, v in m.state_dict().items()
                                                if "cond_inject" in k or "cond_shift" in k}})
    deg, clean = images
    with torch.no_grad():
        torch.testing.assert_close(m.teacher_forcing(deg, clean)[0], plain.teacher_forcing(deg, clean)[0],
                                   atol=0, rtol=0)
    m.train()
    logits, target = m.teacher_forcing(deg, clean)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten()).backward()
    assert m.transformer.cond_inject.weight.grad.abs().max() > 1e-6
    assert m.transformer.blocks[0].cross_attn.q_proj.weight.grad.abs().max() == 0


def test_condition_inject_is_refused_when_unknown():
    from restorevar.errors import UserError
    from restorevar.models.transformer import TransformerConfig

    with pytest.raises(UserError, match="condition_inject"):
        TransformerConfig(condition_inject="sideways").validate()


@pytest.mark.parametrize("positions,conditioning", VARIANTS)
def test_output_ignores_condition_at_init(positions, conditioning, images):
    m = make_tiny([f"transformer.positions={positions}", f"transformer.conditioning={conditioning}"])
    deg, clean = images
    x_in = m.vqvae.quantizer.idx_to_teacher_input(m.vqvae.image_to_idx(clean))
    with torch.no_grad():
        a = m.transformer(m.condition(deg), x_in)
        b = m.transformer(m.condition(-deg.flip(-1)), x_in)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    # ...and opening the gates makes it depend on the condition (the test above can fail)
    with torch.no_grad():
        for blk in m.transformer.blocks:
            blk.cross_attn.gain.fill_(1.0)
        c = m.transformer(m.condition(deg), x_in)
        d = m.transformer(m.condition(-deg.flip(-1)), x_in)
    assert (c - d).abs().max() > 1e-4


def test_zero_gates_still_receive_gradients(images):
    m = make_tiny().train()
    logits, target = m.teacher_forcing(*images)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten()).backward()
    assert m.transformer.sos_gain.grad is not None and m.transformer.sos_gain.grad.abs() > 0
    assert all(b.cross_attn.gain.grad.abs() > 0 for b in m.transformer.blocks)


def test_sampling_is_seeded_and_greedy_is_default(images):
    m = make_tiny(gains=0.5)
    cond = m.condition(images[0])
    q = m.vqvae.quantizer
    s1 = m.transformer.generate(cond, q, top_k=8, top_p=0.9, seed=3)
    s2 = m.transformer.generate(cond, q, top_k=8, top_p=0.9, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(s1.idx_list, s2.idx_list))
    g1 = m.transformer.generate(cond, q)
    g2 = m.transformer.generate(cond, q, seed=99)
    assert all(torch.equal(a, b) for a, b in zip(g1.idx_list, g2.idx_list))


def test_top_k_one_is_greedy(images):
    m = make_tiny(gains=0.5)
    cond = m.condition(images[0])
    q = m.vqvae.quantizer
    greedy = m.transformer.generate(cond, q)
    k1 = m.transformer.generate(cond, q, top_k=1, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(greedy.idx_list, k1.idx_list))


def test_top_p_keeps_the_smallest_nucleus():
    from restorevar.models.transformer import sample_tokens

    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_tokens(logits, 0, 0.75, 1.0, g)) for _ in range(200)}
    assert draws == {0, 1}  # 0.5 + 0.3 reaches 0.75; 2 and 3 are cut


def test_forward_backward_every_variant(images):
    for refiner in ("lrt", "lrt_no_last_block", "hart_mlp", "none"):
        for positions, conditioning in VARIANTS:
            m = make_tiny([f"transformer.positions={positions}", f"transformer.conditioning={conditioning}",
                           f"refiner.kind={refiner}"]).train()
            logits, target = m.teacher_forcing(*images)
            assert logits.shape == (2, m.transformer.L, m.cfg.vqvae.vocab_size)
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten()).backward()
            out = m.eval().restore(images[0])
            assert out.image_B3HW.shape == images[0].shape
            assert out.image_B3HW.abs().max() <= 1.0


@pytest.mark.parametrize("preset", ["tiny", "cpu", "small", "paper"])
def test_cross_attention_norms_use_the_official_eps_and_the_rest_norm_eps(preset):
    from restorevar.models import RestoreVAR, get_preset

    with torch.device("meta"):
        t = RestoreVAR(get_preset(preset)).transformer
    cross = {n: m.eps for n, m in t.named_modules() if isinstance(m, torch.nn.LayerNorm) and ".cross_attn." in n}
    rest = {n: m.eps for n, m in t.named_modules() if isinstance(m, torch.nn.LayerNorm) and n not in cross}
    assert len(cross) == 2 * t.cfg.depth and {n.rsplit(".", 1)[1] for n in cross} == {"norm_q", "norm_kv"}
    assert set(cross.values()) == {1e-5}  # the official cross-attention LayerNorms keep PyTorch's default
    assert set(rest.values()) == {t.cfg.norm_eps} == {1e-6} and "head_norm" in rest and "blocks.0.norm1" in rest


def test_norm_eps_must_be_positive():
    from restorevar.errors import UserError

    with pytest.raises(UserError, match="transformer.cross_norm_eps must be positive"):
        make_tiny(["transformer.cross_norm_eps=0"])
