"""The paper preset matches Table 10 of the paper; counted on the meta device (no memory, no init)."""
import pytest
import torch

from restorevar.models import RestoreVAR, get_preset


def _counts(overrides=()):
    with torch.device("meta"):
        m = RestoreVAR(get_preset("paper", list(overrides)))
    return {name: sum(p.numel() for p in getattr(m, name).parameters()) / 1e6
            for name in ("vqvae", "transformer", "refiner")}


def test_paper_counts_match_table_10():
    c = _counts()
    assert c["transformer"] == pytest.approx(273.986, abs=0.01)
    assert c["refiner"] == pytest.approx(22.968, abs=0.01)
    assert c["vqvae"] == pytest.approx(108.948, abs=0.01)


def test_ablation_refiner_counts_match_table_4():
    assert _counts(["refiner.kind=lrt_no_last_block"])["refiner"] == pytest.approx(14.61, abs=0.01)
    assert _counts(["refiner.kind=hart_mlp"])["refiner"] == pytest.approx(36.06, abs=0.05)
    assert _counts(["refiner.kind=none"])["refiner"] == 0


def test_var_d16_with_adaln_would_be_larger():
    # The paper: removing AdaLN saves 102.86 M; VAR-d16 with AdaLN is 310.28 M. Ours differs from VAR-d16
    # by AdaLN (-), cross-attention and conditioning (+), and absolute positions (-).
    C, depth, L256 = 1024, 16, 680
    adaln = depth * (C * 6 * C + 6 * C) + (C * 2 * C + 2 * C)
    assert adaln / 1e6 == pytest.approx(102.86, abs=0.01)
    cross = depth * (4 * C + 4 * C * C + C + 16 + 1)
    cond = (32 * 32 + 32) + (32 * C + C) * 2 + C + 1
    var_d16 = _counts()["transformer"] * 1e6 - cross - cond + adaln + L256 * C + C
    assert var_d16 / 1e6 == pytest.approx(310.28, abs=0.01)
