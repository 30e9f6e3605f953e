"""Multi-scale residual quantization (spec section 1)."""
import itertools

import torch
import torch.nn.functional as F

from restorevar.models.quantizer import MultiScaleQuantizer, SharedPhi


def _multiscale_latent(patch_nums, C, B=2, seed=0):
    """A latent built the way VAR's tokenizer explains one: a sum of upsampled maps of every scale."""
    g = torch.Generator().manual_seed(seed)
    G = patch_nums[-1]
    f = torch.zeros(B, C, G, G)
    for k, pn in enumerate(patch_nums):
        f += F.interpolate(torch.randn(B, C, pn, pn, generator=g), size=(G, G), mode="bicubic") * 0.7**k
    return f


def _quantizer_with_dense_codebook(patch_nums=(1, 2, 3, 4, 6, 8)):
    """Cvae=2 and a fine 64x64 grid codebook over [-3, 3]^2; Phi set to the identity."""
    q = MultiScaleQuantizer(vocab_size=64 * 64, channels=2, patch_nums=patch_nums)
    axis = torch.linspace(-3, 3, 64)
    with torch.no_grad():
        q.codebook.weight.copy_(torch.cartesian_prod(axis, axis))
        for conv in q.phi.convs:
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[:, :, 1, 1] = torch.eye(2)
    return q.eval()


def test_phi_sharing_matches_var_for_ten_scales():
    phi = SharedPhi(channels=4, n_shared=4)
    assert [phi.index_for_scale(k, 10) for k in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def test_reconstruction_error_falls_as_scales_are_added():
    q = _quantizer_with_dense_codebook()
    f = _multiscale_latent(q.patch_nums, 2)
    out = q(f, trace=True)
    errors = [F.mse_loss(fh, f).item() for fh in out.f_hat_list]
    assert all(b < a for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.01 * errors[0]


def test_last_scale_quantizes_the_residual_itself():
    q = _quantizer_with_dense_codebook()
    f = _multiscale_latent(q.patch_nums, 2, seed=1)
    out = q(f, trace=True)
    z_last = out.z_list[-1]
    assert z_last.shape == f.shape  # no downsampling at the last scale
    torch.testing.assert_close(z_last, f - out.f_hat_list[-2], atol=1e-6, rtol=0)


def test_indices_to_f_hat_matches_accumulated_value(tiny_cfg):
    from restorevar.models import VQVAE

    torch.manual_seed(0)
    vae = VQVAE(tiny_cfg.vqvae).eval()
    f = vae.encode(torch.rand(2, 3, 32, 32) * 2 - 1)
    out = vae.quantize(f, trace=True)
    torch.testing.assert_close(vae.quantizer.idx_to_f_hat(out.idx_list), out.f_hat_list[-1], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.f_hat_BChw, out.f_hat_list[-1], atol=1e-6, rtol=1e-6)


def test_teacher_forcing_inputs_are_downsampled_partial_sums(tiny_cfg):
    from restorevar.models import VQVAE

    torch.manual_seed(0)
    vae = VQVAE(tiny_cfg.vqvae).eval()
    out = vae.quantize(vae.encode(torch.rand(1, 3, 32, 32)), trace=True)
    x_in = vae.quantizer.idx_to_teacher_input(out.idx_list)
    pns = tiny_cfg.vqvae.patch_nums
    assert x_in.shape == (1, sum(p * p for p in pns[1:]), tiny_cfg.vqvae.z_channels)
    begin = 0
    for k in range(len(pns) - 1):
        pn = pns[k + 1]
        expect = F.interpolate(out.f_hat_list[k], size=(pn, pn), mode="area").flatten(2).transpose(1, 2)
        torch.testing.assert_close(x_in[:, begin:begin + pn * pn], expect, atol=1e-5, rtol=1e-5)
        begin += pn * pn


def test_vq_loss_and_straight_through_gradient():
    q = _quantizer_with_dense_codebook()
    q.train()
    f = _multiscale_latent(q.patch_nums, 2).requires_grad_(True)
    out = q(f)
    assert out.vq_loss.item() > 0
    # straight-through: d f_hat / d f is the identity
    (out.f_hat_BChw * 3.0).sum().backward()
    torch.testing.assert_close(f.grad, torch.full_like(f, 3.0))


def test_vq_loss_formula():
    q = _quantizer_with_dense_codebook(patch_nums=(1, 2))
    f = _multiscale_latent((1, 2), 2, seed=3)
    out = q(f, trace=True)
    expect = sum(1.25 * F.mse_loss(fh, f) for fh in out.f_hat_list) / 2  # beta + 1 in value
    torch.testing.assert_close(out.vq_loss, expect)
