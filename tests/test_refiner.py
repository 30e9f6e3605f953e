"""Refiner strategies: LRT, LRT without last-block guidance, HART MLP diffusion, none."""
import pytest
import torch

from conftest import make_tiny
from restorevar.errors import UserError


def _generated(m, images):
    return m.transformer.generate(m.condition(images[0]), m.vqvae.quantizer)


def test_none_refiner_passes_f_hat_through(images):
    m = make_tiny(["refiner.kind=none"], gains=0.5)
    gen = _generated(m, images)
    assert m.refiner.refine(gen.f_hat_BChw, gen.hidden_BLC) is gen.f_hat_BChw
    assert sum(p.numel() for p in m.refiner.parameters()) == 0


def test_lrt_predicts_a_residual_and_reads_hidden_states(images):
    m = make_tiny(["refiner.kind=lrt"], gains=0.5)
    gen = _generated(m, images)
    with torch.no_grad():
        m.refiner.proj_out.weight.zero_()
    torch.testing.assert_close(m.refiner.refine(gen.f_hat_BChw, gen.hidden_BLC), gen.f_hat_BChw)
    torch.manual_seed(1)
    with torch.no_grad():
        m.refiner.proj_out.weight.normal_()
    a = m.refiner.refine(gen.f_hat_BChw, gen.hidden_BLC)
    b = m.refiner.refine(gen.f_hat_BChw, gen.hidden_BLC.flip(1))
    assert (a - b).abs().max() > 1e-4  # the last block's hidden states steer the refinement


def test_lrt_without_last_block_ignores_hidden_states(images):
    m = make_tiny(["refiner.kind=lrt_no_last_block"], gains=0.5)
    gen = _generated(m, images)
    with torch.no_grad():
        m.refiner.proj_out.weight.normal_()
    a = m.refiner.refine(gen.f_hat_BChw, gen.hidden_BLC)
    b = m.refiner.refine(gen.f_hat_BChw, None)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["lrt", "lrt_no_last_block"])
def test_a_detail_residual_leaves_every_blocks_mean_alone_and_still_refines(kind, images):
    """residual=detail: the refined latent has f_hat's mean over every 2 x 2 block (colour and tone stay the
    tokens'), and differs from f_hat within the blocks."""
    from restorevar.models.refiner import block_mean

    m = make_tiny([f"refiner.kind={kind}", "refiner.residual=detail", "refiner.detail_cell=2"], gains=0.5)
    gen = _generated(m, images)
    torch.manual_seed(1)
    with torch.no_grad():
        m.refiner.proj_out.weight.normal_()
        out = m.refiner.refine(gen.f_hat_BChw, gen.hidden_BLC)
    torch.testing.assert_close(block_mean(out, 2), block_mean(gen.f_hat_BChw, 2), atol=1e-5, rtol=1e-5)
    assert (out - gen.f_hat_BChw).abs().max() > 1e-3
    full = make_tiny([f"refiner.kind={kind}"], gains=0.5)  # the paper's full residual moves the block means
    full.refiner.load_state_dict(m.refiner.state_dict())
    with torch.no_grad():
        moved = full.refiner.refine(gen.f_hat_BChw, gen.hidden_BLC)
    assert (block_mean(moved, 2) - block_mean(gen.f_hat_BChw, 2)).abs().max() > 1e-3


def test_block_mean_averages_each_block_and_a_ragged_edge_on_its_own():
    from restorevar.models.refiner import block_mean

    x = torch.arange(25.0).view(1, 1, 5, 5)
    m = block_mean(x, 2)[0, 0]
    assert m[0, 0] == m[1, 1] == (0 + 1 + 5 + 6) / 4 and m[4, 4] == 24 and m[0, 4] == (4 + 9) / 2


@pytest.mark.parametrize("kind", ["hart_mlp", "none"])
def test_a_detail_residual_is_refused_where_the_refiner_has_no_residual_to_filter(kind):
    with pytest.raises(UserError, match="refiner.residual=detail is a setting of the LRT refiners"):
        make_tiny([f"refiner.kind={kind}", "refiner.residual=detail"])


def test_lrt_loss_is_l1_to_target_and_trains(images):
    m = make_tiny(["refiner.kind=lrt"], gains=0.5)
    gen = _generated(m, images)
    target = m.vqvae.encode(images[1]).detach()
    loss = m.refiner.loss(gen.f_hat_BChw, gen.hidden_BLC, target)
    torch.testing.assert_close(loss, (m.refiner.refine(gen.f_hat_BChw, gen.hidden_BLC) - target).abs().mean())
    opt = torch.optim.Adam(m.refiner.parameters(), lr=3e-3)
    first = loss.item()
    for _ in range(30):
        opt.zero_grad()
        loss = m.refiner.loss(gen.f_hat_BChw, gen.hidden_BLC, target)
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


def test_hart_refiner_is_seeded_and_learns(images):
    m = make_tiny(["refiner.kind=hart_mlp"], gains=0.5)
    gen = _generated(m, images)
    a = m.refiner.refine(gen.f_hat_BChw, gen.hidden_BLC, seed=1)
    b = m.refiner.refine(gen.f_hat_BChw, gen.hidden_BLC, seed=1)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    target = m.vqvae.encode(images[1]).detach()
    torch.manual_seed(0)
    opt = torch.optim.Adam(m.refiner.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = m.refiner.loss(gen.f_hat_BChw, gen.hidden_BLC, target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10


def test_a_detail_refiners_checkpoint_decodes_its_tokens_without_a_refiner(tmp_path):
    """load_model(refiner_none=True) swaps in the identity refiner, which has no residual to filter: a checkpoint
    whose refiner is an LRT with residual=detail still loads that way (the transformer ablations decode so)."""
    from restorevar.checkpoint import load_model, save_checkpoint
    from restorevar.models.refiner import NoRefiner

    m = make_tiny(["refiner.residual=detail"])
    save_checkpoint(tmp_path / "c.pt", config=m.cfg, components={"transformer": m.transformer.state_dict()})
    loaded = load_model(tmp_path / "c.pt", ["transformer"], refiner_none=True)
    assert isinstance(loaded.refiner, NoRefiner)
    for k, v in m.transformer.state_dict().items():
        assert torch.equal(loaded.transformer.state_dict()[k], v)
