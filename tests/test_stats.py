"""Paired statistics against values computed independently here: scipy calls, formulas and toy cases."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from restorevar.errors import UserError
from restorevar.metrics.results import read_results
from restorevar.stats.compare import compare_methods, comparison_table, holm
from restorevar.stats.paired import paired_test
from restorevar.stats.weighted import dataset_weighted_test


@pytest.fixture
def pair():
    rng = np.random.default_rng(7)
    b = rng.normal(20, 3, 30)
    a = b + rng.normal(0.4, 1.0, 30)
    return a, b


def test_paired_test_matches_scipy_and_the_textbook_formulas(pair):
    a, b = pair
    r = paired_test(a, b, confidence=0.95, n_boot=3000, seed=3)
    d = a - b
    n, mean, sd = d.size, d.mean(), d.std(ddof=1)
    half = sps.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert r.n == 30 and r.mean_diff == pytest.approx(mean, abs=1e-12)
    assert r.ci_t == pytest.approx((mean - half, mean + half), abs=1e-10)
    assert r.p_t == pytest.approx(2 * sps.t.sf(abs(mean / (sd / math.sqrt(n))), n - 1), rel=1e-9)
    assert r.p_wilcoxon == pytest.approx(sps.wilcoxon(a, b).pvalue, rel=1e-12)
    assert r.effect_dz == pytest.approx(mean / sd)
    boot = sps.bootstrap((d,), np.mean, n_resamples=3000, method="BCa", rng=np.random.default_rng(3))
    assert r.ci_bca == pytest.approx((boot.confidence_interval.low, boot.confidence_interval.high))
    lo, hi = r.ci_bca
    assert lo < mean < hi


def test_all_positive_differences_give_the_smallest_wilcoxon_p():
    b = np.arange(10.0)
    a = b + np.linspace(0.1, 1.0, 10)  # every difference positive and distinct
    r = paired_test(a, b)
    assert r.p_wilcoxon == pytest.approx(2 / 2**10)  # exact two-sided: only 2 of 1024 sign patterns as extreme
    assert r.mean_diff > 0 and r.ci_t[0] > 0


def test_constant_differences_do_not_crash_and_zero_differences_mean_no_evidence():
    r = paired_test(np.ones(5), np.ones(5))
    assert r.mean_diff == 0 and r.p_t == 1.0 and r.p_wilcoxon == 1.0 and r.ci_bca == (0.0, 0.0)
    r = paired_test(np.full(6, 2.0), np.ones(6))
    assert r.ci_t == (1.0, 1.0) and r.p_t == 0.0


def test_bad_paired_input_is_rejected():
    with pytest.raises(ValueError, match="equal"):
        paired_test([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        paired_test([1, float("nan")], [1, 2])


def test_dataset_weighting_ignores_stratum_size():
    big, small = np.full(100, 1.0), np.full(2, -1.0)
    w = dataset_weighted_test({"big": big, "small": small}, n_boot=500, n_perm=500)
    assert w.mean_diff == pytest.approx(0.0)  # pooled mean would be 98/102
    # repeating every image of one stratum ten times changes neither the statistic nor its interval's centre
    rng = np.random.default_rng(0)
    g1, g2 = rng.normal(1, 1, 8), rng.normal(-0.5, 1, 5)
    w1 = dataset_weighted_test([g1, g2], n_boot=500, n_perm=500)
    w2 = dataset_weighted_test([np.repeat(g1, 10), g2], n_boot=500, n_perm=500)
    assert w1.mean_diff == pytest.approx(w2.mean_diff) == pytest.approx((g1.mean() + g2.mean()) / 2)


def test_exact_sign_flip_p_on_a_hand_checkable_case():
    # five positive differences in one stratum: only the all-plus and all-minus patterns are as extreme
    w = dataset_weighted_test({"s": np.array([1.0, 2.0, 3.0, 4.0, 5.0])})
    assert w.exact and w.n_perm == 32 and w.p_perm == pytest.approx(2 / 32)
    # symmetric differences: the observed statistic is 0, so every pattern is as extreme
    w = dataset_weighted_test({"s": np.array([1.0, -1.0])})
    assert w.p_perm == 1.0


def test_monte_carlo_sign_flip_agrees_with_the_exact_test():
    rng = np.random.default_rng(1)
    groups = {"a": rng.normal(0.3, 1, 9), "b": rng.normal(0.3, 1, 7)}  # 16 images: exact
    exact = dataset_weighted_test(groups, exact_max=16)
    mc = dataset_weighted_test(groups, exact_max=0, n_perm=20000, seed=2)
    assert exact.exact and not mc.exact
    assert mc.p_perm == pytest.approx(exact.p_perm, abs=0.015)


def test_holm_matches_the_hand_computation():
    # sorted 0.01, 0.03, 0.04 -> 0.03, 0.06, max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.02, float("nan"), 0.5])
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.5)


def _frame(protocols=("p1",)) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for proto in protocols:
        for deg, n in (("haze", 6), ("rain", 3)):
            for i in range(n):
                base = rng.normal(20, 1)
                for method, shift in (("model", 1.0), ("input", 0.0)):
                    rows.append({"method": method, "dataset": "synth", "degradation": deg, "image_id": f"{deg}{i}",
                                 "metric": "psnr", "value": base + shift + 0.1 * i, "protocol": proto})
    rows.append({"method": "model", "dataset": "synth", "degradation": "haze", "image_id": "orphan",
                 "metric": "psnr", "value": 1.0, "protocol": protocols[0]})
    return pd.DataFrame(rows)


def test_compare_methods_pairs_images_per_stratum():
    res = compare_methods(_frame(), "model", "input", "psnr", n_boot=200, n_perm=200)
    assert [(s["degradation"], s["n"]) for s in res["strata"]] == [("haze", 6), ("rain", 3)]
    assert res["unmatched"] == {"model": 1, "input": 0}
    assert res["pooled"]["mean_diff"] == pytest.approx(1.0) and res["weighted"]["mean_diff"] == pytest.approx(1.0)
    table = comparison_table(res)
    assert list(table.group) == ["synth/haze", "synth/rain", "all (pooled)", "all (dataset-weighted)"]
    tested = table.dropna(subset=["p (t)"])
    assert len(tested) == 3 and (tested["p (t), Holm"] >= tested["p (t)"]).all()
    assert table["p (sign-flip)"].notna().tolist() == [False, False, False, True]


def test_compare_refuses_to_mix_protocols_and_names_unknown_methods():
    df = _frame(("rgb-crop0-resize64", "y-crop4-resize64"))
    with pytest.raises(UserError, match="several protocols.*--protocol"):
        compare_methods(df, "model", "input", "psnr")
    assert compare_methods(df, "model", "input", "psnr", protocol="y-crop4-resize64", n_boot=200,
                           n_perm=200)["protocol"] == "y-crop4-resize64"
    with pytest.raises(UserError, match="method 'nope'"):
        compare_methods(df, "model", "nope", "psnr")
    with pytest.raises(UserError, match="no results for metric 'lpips'"):
        compare_methods(_frame(), "model", "input", "lpips")


def test_stats_compare_command(tmp_path, capsys):
    from restorevar.cli import main
    from restorevar.metrics import write_rows

    df = _frame()
    for method, g in df.groupby("method"):
        write_rows(tmp_path / f"{method}.parquet", g.to_dict("records"))
    assert main(["stats", "compare", "model", "input", "--metric", "psnr", "--results", str(tmp_path),
                 "--n-boot", "200", "--n-perm", "200"]) == 0
    out = capsys.readouterr()
    assert "| all (dataset-weighted) |" in out.out and "1 image(s) of model have no partner" in out.err
    write_rows(tmp_path / "other.parquet", _frame(("y-crop4-resize64",)).to_dict("records"))
    assert main(["stats", "compare", "model", "input", "--metric", "psnr", "--results", str(tmp_path)]) == 2
    assert "several protocols" in capsys.readouterr().err


# -- bad input: one-line errors, never a traceback or a number from broken rows -----------------------------
def _with(df: pd.DataFrame, **row) -> pd.DataFrame:
    """``df`` with the first model/haze0 psnr row changed."""
    df = df.copy()
    i = df.index[(df.method == "model") & (df.image_id == "haze0")][0]
    if "value" in row:
        df["value"] = df["value"].astype(object)
    for k, v in row.items():
        df.at[i, k] = v
    return df


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "ten"], ids=["nan", "inf", "text"])
def test_a_value_that_is_not_a_finite_number_is_named(bad):
    with pytest.raises(UserError, match=r"model: 'psnr' value .* of synth/haze image 'haze0' is not a finite number"):
        compare_methods(_with(_frame(), value=bad), "model", "input", "psnr", n_boot=200, n_perm=200)


def test_non_finite_values_of_other_methods_or_metrics_do_not_matter():
    df = _frame()
    extra = df[df.method == "model"].assign(method="other", value=float("nan"))
    res = compare_methods(pd.concat([df, extra]), "model", "input", "psnr", n_boot=200, n_perm=200)
    assert res["pooled"]["n"] == 9


def test_an_image_scored_twice_is_refused_not_paired_twice():
    df = _frame()
    dup = df[(df.method == "input") & (df.image_id == "rain1")]
    with pytest.raises(UserError, match=r"input has 2 'psnr' rows for synth/rain image 'rain1' under p1; keep one"):
        compare_methods(pd.concat([df, dup]), "model", "input", "psnr", n_boot=200, n_perm=200)


@pytest.mark.parametrize("kw, message", [({"confidence": 1.5}, "confidence must lie strictly between 0 and 1"),
                                         ({"confidence": 0.0}, "confidence must lie strictly between 0 and 1"),
                                         ({"confidence": float("nan")}, "confidence must lie strictly between"),
                                         ({"n_boot": 0}, "n_boot must be an integer >= 100"),
                                         ({"n_perm": -1}, "n_perm must be an integer >= 100"),
                                         ({"seed": -3}, "seed must be an integer >= 0")])
def test_bad_resampling_settings_are_refused_before_any_work(kw, message):
    with pytest.raises(UserError, match=message):
        compare_methods(_frame(), "model", "input", "psnr", **{"n_boot": 200, "n_perm": 200, **kw})


def test_stats_compare_command_reports_bad_input_on_one_line(tmp_path, capsys):
    from restorevar.cli import main

    df = _with(_frame(), value="ten")
    df.to_csv(tmp_path / "all.csv", index=False)
    assert main(["stats", "compare", "model", "input", "--metric", "psnr", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "value 'ten'" in err
    _frame().to_csv(tmp_path / "all.csv", index=False)
    assert main(["stats", "compare", "model", "input", "--metric", "psnr", "--results", str(tmp_path),
                 "--n-boot", "0"]) == 2
    assert "n_boot must be an integer >= 100" in capsys.readouterr().err


# -- image ids are text: "01" and "1" are two images, "NA" and "" are ids, not missing values ---------------
def _csv_results(folder, values: dict[str, dict[str, str]]) -> None:
    """``folder/<method>.csv`` for each method: one psnr row per {id: value}, both written as text."""
    folder.mkdir(exist_ok=True)
    for method, rows in values.items():
        with open(folder / f"{method}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["method", "dataset", "degradation", "image_id", "metric", "value", "protocol"])
            w.writerows([method, "synth", "haze", i, "psnr", v, "p1"] for i, v in rows.items())


def test_ids_that_read_as_the_same_number_are_different_images(tmp_path, capsys):
    from restorevar.cli import main

    ids = ["01", "1", "007", "7", "1.0", "NA", ""]
    _csv_results(tmp_path, {"model": {i: f"{21 + k}.5" for k, i in enumerate(ids)},
                            "input": {i: f"{20 + k}" for k, i in enumerate(ids)}})
    assert main(["stats", "compare", "model", "input", "--metric", "psnr", "--results", str(tmp_path), "--json",
                 "--n-boot", "200", "--n-perm", "200"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pooled"]["n"] == 7 and res["pooled"]["mean_diff"] == pytest.approx(1.5)
    assert res["unmatched"] == {"model": 0, "input": 0}


def test_an_image_scored_as_01_pairs_with_01_not_with_1(tmp_path):
    _csv_results(tmp_path, {"model": {"01": "21", "02": "22", "03": "23.5"}, "input": {"1": "20", "2": "21", "3": "22"}})
    with pytest.raises(UserError, match="model and input share no images"):
        compare_methods(read_results(tmp_path), "model", "input", "psnr", n_boot=200, n_perm=200)


def test_ids_are_read_as_written_and_values_as_numbers(tmp_path):
    _csv_results(tmp_path, {"model": {"01": "21.5", "NA": "NaN", "": "ten", "1e3": "1e3"}})
    df = read_results(tmp_path)
    assert df.image_id.tolist() == ["01", "NA", "", "1e3"]
    assert df.value[0] == 21.5 and math.isnan(df.value[1]) and df.value[2] == "ten" and df.value[3] == 1000.0
