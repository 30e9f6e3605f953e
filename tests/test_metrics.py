"""Metrics with explicit protocols, checked against scikit-image on shipped photographs; evaluation and
cost measurement on small real data."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from conftest import make_tiny
from restorevar.data.photos import PHOTOS, load_photo
from restorevar.data.synth import SynthConfig, synth
from restorevar.data.weights import metric_availability
from restorevar.errors import UserError
from restorevar.metrics import MetricProtocol, MetricSuite, read_results, summary, write_rows
from restorevar.metrics.cost import measure_cost
from restorevar.metrics.scoring import evaluate, external_method, identity_method, model_method, roundtrip_method

# stated tolerances: pyiqa computes in float32, scikit-image in float64
PSNR_TOL_DB = 1e-3
SSIM_TOL = 2e-4


@pytest.fixture(scope="module")
def photos():
    """A 96 px crop of a shipped photograph and a noisy, darkened copy of it, in [0, 1]."""
    img = load_photo(next(p for p in PHOTOS if p.name == "coffee"))[100:196, 200:296].astype(np.float64) / 255
    rng = np.random.default_rng(0)
    deg = np.clip(0.8 * img + rng.normal(0, 0.05, img.shape), 0, 1)  # float, as model outputs are
    return img, deg


def _q8(x: np.ndarray) -> np.ndarray:
    """pyiqa's SSIM rounds to 8-bit levels first, as the MATLAB reference does; PSNR does not."""
    return np.round(x * 255) / 255


def _t(x_HW3: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x_HW3).permute(2, 0, 1)[None].float()


def _suite(colour="rgb", crop=0, names=("psnr", "ssim"), cache=None):
    return MetricSuite(list(names), MetricProtocol(colour, crop, "resize", 96), weights_cache=cache)


def test_rgb_psnr_and_ssim_match_scikit_image(photos):
    clean, deg = photos
    s = _suite().score(_t(deg), _t(clean))
    assert s["psnr"][0] == pytest.approx(peak_signal_noise_ratio(clean, deg, data_range=1.0), abs=PSNR_TOL_DB)
    ref = structural_similarity(_q8(clean), _q8(deg), data_range=1.0, channel_axis=2, gaussian_weights=True,
                                sigma=1.5, use_sample_covariance=False)
    assert s["ssim"][0] == pytest.approx(ref, abs=SSIM_TOL)


def test_y_channel_and_crop_border_follow_the_basicsr_convention(photos):
    clean, deg = photos
    y = lambda x: rgb2ycbcr(x)[..., 0] / 255
    s = _suite("y", 8).score(_t(deg), _t(clean))
    yc, yd = y(clean)[8:-8, 8:-8], y(deg)[8:-8, 8:-8]
    assert s["psnr"][0] == pytest.approx(peak_signal_noise_ratio(yc, yd, data_range=1.0), abs=PSNR_TOL_DB)
    ref = structural_similarity(_q8(yc), _q8(yd), data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert s["ssim"][0] == pytest.approx(ref, abs=SSIM_TOL)
    assert MetricProtocol("y", 8, "resize", 96).id == "y-crop8-resize96"


def _official(colour="rgb", crop=0, names=("psnr", "ssim")):
    return MetricSuite(list(names), MetricProtocol(colour, crop, "resize", 96, convention="official"))


def test_official_ssim_is_scikit_images_default_exactly(photos):
    """The official evaluation calls structural_similarity(clean, restored, data_range=1, channel_axis=2)."""
    clean, deg = photos
    s = _official().score(_t(deg), _t(clean))
    c64, d64 = (_t(x)[0].permute(1, 2, 0).double().numpy() for x in (clean, deg))  # the float32 values scored
    ref = structural_similarity(c64, d64, data_range=1.0, channel_axis=2)
    assert s["ssim"][0] == pytest.approx(ref, rel=1e-10)
    assert abs(s["ssim"][0] - _suite().score(_t(deg), _t(clean))["ssim"][0]) > 1e-3  # a different number
    assert s["psnr"][0] == pytest.approx(peak_signal_noise_ratio(c64, d64, data_range=1.0), abs=PSNR_TOL_DB)
    y = lambda x: rgb2ycbcr(x)[..., 0] / 255
    s = _official("y", 8).score(_t(deg), _t(clean))
    ref = structural_similarity(y(c64)[8:-8, 8:-8], y(d64)[8:-8, 8:-8], data_range=1.0)
    assert s["ssim"][0] == pytest.approx(ref, abs=1e-6)
    assert MetricProtocol("rgb", 0, "resize", 512, convention="official").id == "rgb-crop0-resize512-official"
    with pytest.raises(ValueError, match="convention must be basicsr or official"):
        MetricProtocol(convention="matlab").validate()


def test_official_convention_scores_no_reference_metrics_on_the_8_bit_output(photos):
    _, deg = photos
    seen = {}
    for convention in ("basicsr", "official"):
        suite = MetricSuite([], MetricProtocol(size=96, convention=convention))
        suite._metrics["musiq"] = lambda x, c=convention: seen.setdefault(c, x.clone()).mean((1, 2, 3))
        suite.score(_t(deg), None)
    assert torch.equal(seen["official"], (seen["official"] * 255).round() / 255)
    assert not torch.equal(seen["basicsr"], (seen["basicsr"] * 255).round() / 255)


def test_metrics_without_cached_weights_are_unavailable_with_the_reason(photos, tmp_path):
    clean, deg = photos
    suite = _suite(names=("psnr", "lpips", "musiq"), cache=tmp_path / "empty")
    for name in ("lpips", "musiq"):
        ok, reason = suite.available[name]
        assert not ok and "weights not cached" in reason and "fetch-weights" in reason
    assert set(suite.score(_t(deg), _t(clean))) == {"psnr"}  # never a made-up value for the others
    assert set(suite.score(_t(deg), None)) == set()  # full-reference metrics need a target


@pytest.mark.skipif(not metric_availability()["lpips"][0], reason="LPIPS weights not cached "
                    "(restorevar data fetch-weights --only alexnet lpips_alex needs the network)")
def test_lpips_orders_a_small_and_a_large_distortion(photos):
    clean, deg = photos
    suite = _suite(names=("lpips",))
    worse = np.clip(clean + np.random.default_rng(1).normal(0, 0.2, clean.shape), 0, 1)
    s_small, s_large = suite.score(_t(deg), _t(clean))["lpips"][0], suite.score(_t(worse), _t(clean))["lpips"][0]
    assert 0 <= s_small < s_large


def test_bad_protocols_are_rejected():
    with pytest.raises(ValueError, match="crop_border"):
        _suite(crop=48)
    with pytest.raises(ValueError, match="unknown metric 'fid'"):
        _suite(names=("fid",))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    synth(out, SynthConfig(size=32, train_per_degradation=1, test_per_degradation=2), progress=False)
    return out


def test_evaluate_scores_every_method_on_the_same_images(bench, tmp_path):
    from restorevar.data.manifest import read_manifest

    model = make_tiny(gains=0.5)
    protocol = MetricProtocol("rgb", 0, "resize", 32)
    entries = read_manifest(bench / "test.json")
    ext = tmp_path / "other_method"
    ext.mkdir()
    for e in entries[:5]:  # an "external method" that returns the clean targets, for 5 images only
        shutil.copy(bench / e.target_path, ext / Path(e.image_path).name)
    ext_fn, missing = external_method(ext, entries, protocol)
    methods = {"restorevar": model_method(model, torch.device("cpu")), "identity": identity_method(),
               "vqvae_roundtrip": roundtrip_method(model.vqvae, torch.device("cpu")), "oracle": ext_fn}
    suite = MetricSuite(["psnr", "ssim"], protocol, weights_cache=tmp_path / "none")
    rows = evaluate(bench / "test.json", methods, suite, batch_size=4, samples_per_stratum=1,
                    sample_dir=tmp_path / "samples", progress=False)
    n = len(entries)
    assert n == 14 and {m: len(r) for m, r in rows.items()} == {"restorevar": 2 * n, "identity": 2 * n,
                                                                "vqvae_roundtrip": 2 * n, "oracle": 10}
    assert len(missing) == n - 5
    oracle = [r["value"] for r in rows["oracle"] if r["metric"] == "psnr"]
    assert min(oracle) > 40  # the target itself, through the same resize: near-identical
    for name, r in rows.items():
        write_rows(tmp_path / "per_image" / f"{name}.parquet", r)
    df = read_results(tmp_path / "per_image")
    assert set(df.protocol) == {"rgb-crop0-resize32"} and len(df) == 6 * n + 10
    s = summary(df)["rgb-crop0-resize32"]
    assert len(s["identity"]) == 8 and set(s["identity"]["overall"]) == {"psnr", "ssim"}
    ident = df[(df.method == "identity") & (df.metric == "psnr")]
    means = ident.groupby(["dataset", "degradation"])["value"].mean()
    assert s["identity"]["overall"]["psnr"] == pytest.approx(means.mean(), abs=1e-4)  # strata weigh equally
    saved = sorted(p.relative_to(tmp_path / "samples").as_posix() for p in (tmp_path / "samples").rglob("*.png"))
    assert len([p for p in saved if p.endswith("/input.png")]) == 7
    assert any(p.endswith("/oracle.png") for p in saved)


def test_corrupt_results_files_are_named(tmp_path):
    from restorevar.errors import UserError

    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="bad.parquet"):
        read_results(tmp_path)
    with pytest.raises(UserError, match="run the evaluate stage"):
        read_results(tmp_path / "missing")


def test_cost_reports_every_component_with_device_params_and_flops():
    model = make_tiny(gains=0.5)
    cost = measure_cost(model, batch_size=2, warmup=1, repeats=2)
    comps = ("encode", "transformer", "refiner", "decode", "end_to_end")
    assert cost["device"].startswith("cpu") and cost["timer"] == "perf_counter"
    assert all(cost["seconds_per_image"][c] > 0 for c in comps)
    parts = sum(cost["flops_per_image"][c] for c in comps[:-1])
    assert cost["flops_per_image"]["transformer"] > 0 and cost["flops_per_image"]["decode"] > 0
    assert cost["flops_per_image"]["end_to_end"] == pytest.approx(parts, rel=1e-6)
    assert cost["params"]["end_to_end"] == sum(cost["params"][c] for c in comps[:-1])
    json.dumps(cost)  # serialisable as is


def test_the_lowfreq_metric_is_the_imaging_modules_thumbnail_psnr_in_any_protocol(photos):
    from restorevar.imaging import lowfreq_psnr_per_image

    clean, deg = (_t(x) for x in photos)
    for colour in ("rgb", "y"):
        suite = _suite(colour, names=("lowfreq_psnr",))
        got = suite.score(deg, clean)["lowfreq_psnr"]
        want = lowfreq_psnr_per_image(deg * 2 - 1, clean * 2 - 1).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert suite.available["lowfreq_psnr"] == (True, "available")  # it needs no weights


@pytest.mark.parametrize("field,value", [("id", "../../../../escaped"), ("id", "/tmp/escaped-abs"),
                                         ("dataset", "../../escaped"), ("dataset", "/tmp/escaped-abs")])
def test_evaluate_on_a_hostile_manifest_writes_nothing_outside_its_folder(bench, tmp_path, field, value):
    """Ids and dataset names become folders of sample images: a '..' or an absolute path among them is refused
    when the manifest is read, before anything is scored or written."""
    import json
    import os

    rows = json.loads((bench / "test.json").read_text())
    rows[0][field] = value
    hostile = bench / "hostile.json"
    hostile.write_text(json.dumps(rows))
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    before = {p for p in Path("/tmp").iterdir()}
    suite = MetricSuite(["psnr"], MetricProtocol("rgb", 0, "resize", 32), weights_cache=tmp_path / "none")
    with pytest.raises(UserError, match="one plain"):
        evaluate(hostile, {"identity": identity_method()}, suite, samples_per_stratum=1,
                 sample_dir=work / "results" / "samples", progress=False)
    written = [os.path.relpath(os.path.join(d, f), work) for d, _, fs in os.walk(work) for f in fs]
    assert written == [] and {p for p in Path("/tmp").iterdir()} - before == set()
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped-abs").exists()


def test_sample_paths_stay_inside_their_folder_even_through_a_link(tmp_path):
    from restorevar.fileio import path_inside

    (tmp_path / "samples").mkdir()
    assert path_inside(tmp_path / "samples", "toy", "haze", "img1") == tmp_path / "samples" / "toy" / "haze" / "img1"
    for bad in ("..", "a/../..", "/etc", ""):
        with pytest.raises(UserError, match="cannot name a file"):
            path_inside(tmp_path / "samples", "toy", bad)
    (tmp_path / "samples" / "toy").symlink_to(tmp_path)  # a link placed inside leads out
    with pytest.raises(UserError, match="leads outside"):
        path_inside(tmp_path / "samples", "toy", "haze")
