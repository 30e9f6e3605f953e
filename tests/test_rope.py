"""2D RoPE normalised across scales (spec section 3)."""
import torch

from restorevar.models.rope import apply_rope, axis_frequencies, rope_cos_sin, scale_positions


def _score(q, k, pq, pk, head_dim=16):
    cq, sq = rope_cos_sin(pq, head_dim)
    ck, sk = rope_cos_sin(pk, head_dim)
    return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum(-1)


def test_scores_depend_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)
    base = _score(q, k, torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([[4.0, 7.0]], dtype=torch.float64))
    for shift in ([3.0, -5.0], [10.5, 0.25], [-2.0, 31.0]):
        d = torch.tensor([shift], dtype=torch.float64)
        moved = _score(q, k, torch.tensor([[1.0, 2.0]], dtype=torch.float64) + d,
                       torch.tensor([[4.0, 7.0]], dtype=torch.float64) + d)
        torch.testing.assert_close(moved, base, atol=1e-5, rtol=1e-5)
    # and a different relative offset gives a different score
    other = _score(q, k, torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([[5.0, 7.0]], dtype=torch.float64))
    assert not torch.allclose(other, base, atol=1e-4)


def test_rotation_preserves_norm_and_rows_columns_use_their_halves():
    x = torch.randn(1, 1, 1, 16)
    c, s = rope_cos_sin(torch.tensor([[3.0, 0.0]], dtype=torch.float64), 16)
    y = apply_rope(x, c, s)
    torch.testing.assert_close(y.norm(), x.norm())
    torch.testing.assert_close(y[..., 8:], x[..., 8:])  # column 0: the column half is untouched
    assert not torch.allclose(y[..., :8], x[..., :8])


def test_positions_are_normalised_to_the_largest_grid():
    pos = scale_positions((1, 2, 4, 8), grid=8)
    assert pos.shape == (1 + 4 + 16 + 64, 2)
    assert pos[0].tolist() == [0.0, 0.0]
    # scale 2x2: top-left aligned, spacing 8/2 = 4
    assert pos[1:5].tolist() == [[0, 0], [0, 4], [4, 0], [4, 4]]
    # scale 4x4: token (r=3, c=1) sits at (6, 2)
    assert pos[5 + 3 * 4 + 1].tolist() == [6.0, 2.0]
    # the largest scale is the identity grid
    assert pos[-1].tolist() == [7.0, 7.0]
    # paper setting: scale 24 on the 32 grid spaces tokens 4/3 apart
    p = scale_positions((1, 2, 3, 4, 6, 9, 13, 18, 24, 32), 32)
    start = sum(n * n for n in (1, 2, 3, 4, 6, 9, 13, 18))
    torch.testing.assert_close(p[start + 1], torch.tensor([0.0, 32 / 24], dtype=torch.float64))


def test_frequencies_follow_the_spec():
    f = axis_frequencies(64)
    assert f.shape == (16,)
    torch.testing.assert_close(f, torch.tensor([1e4 ** (-4 * i / 64) for i in range(16)], dtype=torch.float64))
