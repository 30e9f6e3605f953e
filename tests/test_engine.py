"""The fast inference path gives the plain path's results: same greedy tokens in fp32, images within 1e-4."""
import copy

import pytest
import torch

from conftest import make_tiny
from restorevar.errors import UserError
from restorevar.inference.engine import PLAIN, Engine, InferenceOptions, bf16_problem, fast
from restorevar.models.kv_cache import GrowingKVCache, StaticKVCache

VARIANTS = [
    [],
    ["transformer.positions=ape"],
    ["transformer.conditioning=discrete"],
    ["refiner.kind=hart_mlp"],
    ["refiner.kind=lrt_no_last_block"],
]


def _pair(overrides, options):
    m = make_tiny(overrides, gains=0.5)  # non-zero gates: the conditioning path matters
    return Engine(copy.deepcopy(m), PLAIN), Engine(m, options)


def _inputs(n=3, size=32, seed=7):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: o[0].split("=")[1] if o else "paper_choice")
def test_fast_fp32_matches_plain(overrides):
    plain, fastp = _pair(overrides, fast("fp32"))
    x = _inputs()
    a, b = plain.restore(x), fastp.restore(x)
    for i, j in zip(a.generated.idx_list, b.generated.idx_list):
        assert torch.equal(i, j)
    torch.testing.assert_close(b.generated.f_hat_BChw, a.generated.f_hat_BChw, rtol=0, atol=1e-5)
    torch.testing.assert_close(b.generated.hidden_BLC, a.generated.hidden_BLC, rtol=0, atol=1e-4)
    torch.testing.assert_close(b.image_B3HW, a.image_B3HW, rtol=0, atol=1e-4)


@pytest.mark.parametrize("change", [{"cross_kv_once": True}, {"kv_cache": "static"}, {"channels_last": True}])
def test_each_optimisation_alone_keeps_tokens_and_logits(change):
    from dataclasses import replace

    plain, one = _pair([], replace(PLAIN, **change))
    x = _inputs(2)
    a, b = plain.restore(x, return_logits=True), one.restore(x, return_logits=True)
    assert all(torch.equal(i, j) for i, j in zip(a.generated.idx_list, b.generated.idx_list))
    for la, lb in zip(a.generated.logits_list, b.generated.logits_list):
        torch.testing.assert_close(lb, la, rtol=0, atol=1e-5)


def test_sampling_is_the_same_on_both_paths():
    plain, fastp = _pair([], fast("fp32"))
    x = _inputs(2)
    a, b = plain.restore(x, top_k=8, seed=3), fastp.restore(x, top_k=8, seed=3)
    assert all(torch.equal(i, j) for i, j in zip(a.generated.idx_list, b.generated.idx_list))


def test_engine_sets_the_vqvae_layout():
    m = make_tiny()
    Engine(m, fast("fp32"))
    w = m.vqvae.decoder.conv_in.weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    Engine(m, PLAIN)
    assert m.vqvae.decoder.conv_in.weight.is_contiguous()


def test_static_cache_writes_in_place_and_matches_concatenation():
    static, growing = StaticKVCache(max_len=10), GrowingKVCache()
    g = torch.Generator().manual_seed(0)
    ptr = None
    for n in (1, 4, 5):
        k, v = torch.randn(2, 3, n, 8, generator=g), torch.randn(2, 3, n, 8, generator=g)
        ks, vs = static.append(k, v)
        kg, vg = growing.append(k, v)
        assert torch.equal(ks, kg) and torch.equal(vs, vg)
        ptr = ptr or ks.data_ptr()
        assert ks.data_ptr() == ptr  # no reallocation: what CUDA graphs need
    with pytest.raises(RuntimeError, match="overflows"):
        static.append(k[:, :, :1], v[:, :, :1])


def test_bad_options_are_named():
    with pytest.raises(UserError, match="unknown dtype 'fp16'"):
        fast("fp16")
    with pytest.raises(UserError, match="kv_cache"):
        Engine(make_tiny(), InferenceOptions(kv_cache="paged"))
    with pytest.raises(ValueError, match="kv_cache"):
        m = make_tiny()
        m.transformer.generate(torch.zeros(1, m.transformer.n_cond, m.transformer.cvae), m.vqvae.quantizer,
                               kv_cache="paged")
    assert PLAIN.name == "plain_fp32" and fast("bf16").name == "fast_bf16"


@pytest.mark.skipif(bf16_problem(torch.device("cpu")) is not None,
                    reason=f"bf16 on this CPU: {bf16_problem(torch.device('cpu'))}")
def test_bf16_keeps_fp32_where_it_matters():
    plain, half = _pair([], fast("bf16"))
    x = _inputs()
    a, b = plain.restore(x, return_logits=True), half.restore(x, return_logits=True)
    assert all(t.dtype == torch.float32 for t in b.generated.logits_list)
    assert b.generated.f_hat_BChw.dtype == torch.float32 and b.image_B3HW.dtype == torch.float32
    assert b.generated.hidden_BLC.dtype == torch.float32  # the residual stream
    # bf16 changes the numbers, but not wildly: the image stays within a few 1e-2 of fp32 on tiny
    assert (b.image_B3HW - a.image_B3HW).abs().mean() < 0.02


def test_flops_count_attention_whatever_the_memory_layout():
    """The counter sees fused CPU attention as 0 FLOPs, and the layout picks the kernel: count_flops avoids both."""
    from dataclasses import replace

    from torch.utils.flop_counter import FlopCounterMode

    from restorevar.metrics.cost import count_flops

    m = make_tiny()
    x = _inputs(1)
    nchw = count_flops(Engine(copy.deepcopy(m), replace(fast("fp32"), channels_last=False)), x)
    nhwc = count_flops(Engine(m, fast("fp32")), x)
    assert nchw == nhwc
    t = m.transformer
    cond = Engine(m, fast("fp32")).encode(x)
    with FlopCounterMode(display=False) as without_attention:
        t.generate(cond, m.vqvae.quantizer)
    ls = [pn * pn for pn in t.patch_nums]
    seen = [sum(ls[:k + 1]) for k in range(len(ls))]
    C, depth = t.cfg.width, t.cfg.depth
    attention = depth * 4 * C * (sum(l * s for l, s in zip(ls, seen)) + t.n_cond * sum(ls))  # QK^T and PV
    assert nhwc["transformer"] - without_attention.get_total_flops() == attention
