"""The scale swap on a constructed case: all scales swapped gives the other image's f_hat exactly, none
swapped changes nothing, and a coarse/fine split sits between the two."""
import pytest
import torch

from conftest import make_tiny
from restorevar.analysis import scale_swap_images, swap_scales


@pytest.fixture(scope="module")
def vqvae():
    return make_tiny().vqvae


def test_swapping_every_scale_gives_the_other_images_f_hat_and_none_changes_nothing(vqvae, images):
    deg, clean = images
    q = vqvae.quantizer
    idx_c, idx_d = vqvae.image_to_idx(clean), vqvae.image_to_idx(deg)
    K = len(idx_c)
    f_hat_d = vqvae.quantize(vqvae.encode(deg)).f_hat_BChw
    assert torch.equal(q.idx_to_f_hat(swap_scales(idx_c, idx_d, range(K))), q.idx_to_f_hat(idx_d))
    torch.testing.assert_close(q.idx_to_f_hat(swap_scales(idx_c, idx_d, range(K))), f_hat_d, rtol=0, atol=1e-6)
    assert torch.equal(q.idx_to_f_hat(swap_scales(idx_c, idx_d, set())), q.idx_to_f_hat(idx_c))
    mixed = swap_scales(idx_c, idx_d, {0, 2})
    assert mixed[0] is idx_d[0] and mixed[1] is idx_c[1] and mixed[2] is idx_d[2]


def test_decoded_swaps_and_bad_splits(vqvae, images):
    deg, clean = images
    out = scale_swap_images(vqvae, clean, deg, split=2)
    assert set(out) == {"clean", "degraded", "coarse_from_degraded", "fine_from_degraded"}
    torch.testing.assert_close(out["clean"], vqvae.idx_to_image(vqvae.image_to_idx(clean)))
    assert not torch.equal(out["coarse_from_degraded"], out["clean"])
    assert not torch.equal(out["fine_from_degraded"], out["clean"])
    with pytest.raises(ValueError, match="split must lie"):
        scale_swap_images(vqvae, clean, deg, split=0)
    with pytest.raises(ValueError, match="outside"):
        swap_scales([torch.zeros(1)], [torch.zeros(1)], {3})
