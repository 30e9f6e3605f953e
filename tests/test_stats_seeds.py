"""Across-seed statistics on constructed per-image data: seed noise is not mistaken for an effect."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from restorevar.stats.paired import paired_test
from restorevar.stats.seeds import across_seeds, seed_verdict


def _rows(effect: float, seed_diffs: list[float], n_images: int = 60, image_noise: float = 0.05) -> pd.DataFrame:
    """PSNR rows of variants a and b, trained with len(seed_diffs) seeds: a - b on seed s is effect +
    seed_diffs[s] (one run's luck, the same on every image) plus a little per-image noise."""
    rng = np.random.default_rng(0)
    base = rng.normal(20, 3, n_images)  # images differ a lot; the pairing removes that
    rows = []
    for s, luck in enumerate(seed_diffs):
        for method, shift in (("a", effect + luck), ("b", 0.0)):
            vals = base + shift + rng.normal(0, image_noise, n_images)
            rows += [{"method": method, "seed": s, "dataset": "d", "degradation": "haze", "image_id": str(i),
                      "metric": "psnr", "value": v} for i, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_seed_noise_without_an_effect_is_inconclusive_where_one_seed_looks_certain():
    df = _rows(effect=0.0, seed_diffs=[0.8, -0.6, 0.3])
    one = df[df.seed == 0]
    single = paired_test(one[one.method == "a"].value.to_numpy(), one[one.method == "b"].value.to_numpy())
    assert single.p_t < 1e-10 and single.ci_t[0] > 0  # one training run: "a is better", with certainty
    r = across_seeds(df, "a", "b", "psnr")
    assert r.n_seeds == 3 and r.n_images == 60 and r.ci[0] < 0 < r.ci[1]
    assert seed_verdict(r, higher_is_better=True) == "inconclusive"
    assert r.between_seed_sd == pytest.approx(np.std([0.8, -0.6, 0.3], ddof=1), abs=0.02)


def test_an_effect_far_above_the_seed_noise_is_supported_and_a_loss_contradicted():
    r = across_seeds(_rows(effect=2.0, seed_diffs=[0.1, -0.1, 0.05]), "a", "b", "psnr")
    assert r.ci[0] > 0 and seed_verdict(r, higher_is_better=True) == "supported"
    assert seed_verdict(r, higher_is_better=False) == "contradicted"  # e.g. LPIPS: higher is worse
    lost = across_seeds(_rows(effect=-2.0, seed_diffs=[0.1, -0.1, 0.05]), "a", "b", "psnr")
    assert seed_verdict(lost, higher_is_better=True) == "contradicted"


def test_the_interval_is_the_t_interval_over_per_seed_means_by_hand():
    # per-seed mean differences 1, 2 and 3 (no image noise): mean 2, SD 1, 2 degrees of freedom
    r = across_seeds(_rows(effect=0.0, seed_diffs=[1.0, 2.0, 3.0], n_images=4, image_noise=0.0), "a", "b", "psnr")
    half = stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)  # 4.3027 * 0.5774 = 2.4841
    assert r.per_seed_diff == pytest.approx({"0": 1.0, "1": 2.0, "2": 3.0})
    assert r.mean_diff == pytest.approx(2.0) and r.between_seed_sd == pytest.approx(1.0)
    assert r.ci == pytest.approx((2.0 - half, 2.0 + half)) and half == pytest.approx(2.4841, abs=1e-4)
    t = 2.0 / (1.0 / np.sqrt(3))
    assert r.p == pytest.approx(2 * stats.t.sf(t, 2))  # 0.0742: not significant with three seeds


def test_one_seed_gives_no_across_seed_interval():
    r = across_seeds(_rows(effect=1.0, seed_diffs=[0.0]), "a", "b", "psnr")
    assert r.n_seeds == 1 and np.isnan(r.ci[0]) and seed_verdict(r, True) == "inconclusive"
    with pytest.raises(ValueError, match="lack"):
        across_seeds(_rows(1.0, [0.0]).drop(columns="seed"), "a", "b", "psnr")


def _compare_per_seed(df: pd.DataFrame, variants: list[str]) -> list[dict]:
    """What the ablation stage does: the per-image paired test within each seed, against variant a."""
    from restorevar.stats.compare import compare_methods

    return [{**compare_methods(df[df.seed == k].drop(columns="seed").assign(protocol="p"), "a", v, "psnr",
                               n_boot=200, n_perm=500), "seed": int(k)}
            for k in sorted(df.seed.unique()) for v in variants if v != "a"]


def test_the_pipeline_path_calls_seed_luck_inconclusive_and_a_real_effect_supported():
    from restorevar.stats.seeds import across_seed_comparisons

    comps = _compare_per_seed(_rows(effect=0.0, seed_diffs=[0.8, -0.6]), ["a", "b"])
    assert all(c["weighted"]["p_perm"] < 0.01 for c in comps)  # each seed alone: "significant", both ways
    [r] = across_seed_comparisons(comps, ["a", "b"], 0.95)
    assert r["verdict"] == "inconclusive" and r["n_seeds"] == 2
    assert r["between_seed_sd"] == pytest.approx(np.std([0.8, -0.6], ddof=1), abs=0.03)
    [r] = across_seed_comparisons(_compare_per_seed(_rows(2.0, [0.05, -0.05]), ["a", "b"]), ["a", "b"], 0.95)
    assert r["verdict"] == "supported" and r["ci"][0] > 0


def test_a_family_of_comparisons_gets_a_bonferroni_level_and_a_seed_free_baseline_does_not():
    from restorevar.stats.seeds import across_seed_comparisons

    df = pd.concat([_rows(1.0, [0.1, -0.1, 0.0]), _rows(0.5, [0.0, 0.1, -0.1]).query("method == 'b'")
                    .assign(method="c"), _rows(0.0, [0, 0, 0]).query("method == 'b'").assign(method="tok")])
    rows = {r["b"]: r for r in across_seed_comparisons(_compare_per_seed(df, ["a", "b", "c", "tok"]), ["a", "b", "c"],
                                                       0.95)}
    assert rows["b"]["family_size"] == 2 and rows["b"]["confidence"] == pytest.approx(0.975)
    assert rows["tok"]["family_size"] == 1 and rows["tok"]["confidence"] == pytest.approx(0.95)


def test_identical_seeds_give_no_interval_and_no_verdict():
    """Zero spread means the seeds did not vary training: not a zero-width interval with p = 0."""
    from restorevar.stats.seeds import ZERO_SPREAD, seed_interval, seed_verdict

    r = seed_interval({"0": 0.7, "1": 0.7}, n_images=10)
    assert np.isnan(r.ci[0]) and np.isnan(r.ci[1]) and np.isnan(r.p) and r.method == ZERO_SPREAD
    assert seed_verdict(r, higher_is_better=True) == "inconclusive"
    assert seed_verdict(seed_interval({"0": 0.7, "1": 0.71, "2": 0.69}), higher_is_better=True) == "supported"


def _seeded(b: str, mean: float, strata: dict[str, float], n: int = 4) -> dict:
    """A within-seed comparison as ``compare_methods`` returns it, reduced to what the across-seed step reads."""
    return {"metric": "psnr", "a": "restorevar", "b": b, "weighted": {"mean_diff": mean, "n": n},
            "strata": [{"dataset": g.split("/")[0], "degradation": g.split("/")[1], "mean_diff": v, "n": n // 2}
                       for g, v in strata.items()]}


def test_a_baseline_trained_per_seed_is_compared_across_its_seeds_overall_and_per_stratum():
    from restorevar.stats.seeds import SEEDED, against_seeded, seed_interval, seed_method

    assert seed_method("promptir", 3) == "promptir_seed3" and SEEDED.match("promptir_seed3")["base"] == "promptir"
    assert SEEDED.match("copy_input") is None
    comparisons = [_seeded("identity", 1.0, {"h/haze": 1.0}),  # not seeded: left alone
                   _seeded("promptir_seed0", -2.0, {"h/haze": -3.0, "r/rain": -1.0}),
                   _seeded("promptir_seed1", -1.0, {"h/haze": -2.5, "r/rain": 0.5}),
                   _seeded("promptir_seed2", -1.5, {"h/haze": -3.5, "r/rain": -0.5})]
    rows = {r["group"]: r for r in against_seeded(comparisons, 0.95)}
    assert set(rows) == {"overall", "h/haze", "r/rain"} and {r["b"] for r in rows.values()} == {"promptir"}
    want = seed_interval({"0": -2.0, "1": -1.0, "2": -1.5}, 4, 0.95)
    assert rows["overall"]["ci"] == pytest.approx(want.ci) and rows["overall"]["mean_diff"] == pytest.approx(-1.5)
    assert rows["overall"]["verdict"] == "contradicted" and rows["overall"]["difference"] == "restorevar - promptir"
    assert rows["h/haze"]["per_seed_diff"] == {"0": -3.0, "1": -2.5, "2": -3.5} and rows["h/haze"]["n_images"] == 2
    assert rows["r/rain"]["verdict"] == "inconclusive"  # -0.33 with a spread of 0.76 over three seeds


def test_the_ablation_stage_line_gives_the_per_image_interval_with_one_seed_and_the_seed_interval_with_more():
    """One training run has no spread: its line names the seed and the per-image interval, never a NaN."""
    from pipelines.ablate import summary_lines
    from restorevar.stats.seeds import across_seed_comparisons

    def lines(seed_diffs: list[float]) -> list[str]:
        comps = _compare_per_seed(_rows(2.0, seed_diffs), ["a", "b"])
        s = {"seeds": list(range(len(seed_diffs))), "comparisons": comps, "variants": ["a", "b"], "images": 60,
             "not_run": {}, "seconds": 1.0, "across_seeds": across_seed_comparisons(comps, ["a", "b"], 0.95)}
        return summary_lines("fam", s)

    [one, tail] = lines([0.0])
    lo, hi = _compare_per_seed(_rows(2.0, [0.0]), ["a", "b"])[0]["weighted"]["ci"]
    assert f"on seed 0 alone, per-image interval [{lo:+.4f}, {hi:+.4f}]" in one and "nan" not in one
    assert "no claim is tested across seeds" in one and "1 seed(s)" in tail
    [two, _] = lines([0.05, -0.05])
    assert "over 2 seed(s)" in two and two.endswith("supported")
