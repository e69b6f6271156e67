import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from flowrestore.analysis import calibration as C
from flowrestore.errors import InputError
from flowrestore.analysis.evaluate import load_image, pairs_of_split

from test_evaluate import make_run


def half_std_pixels(split, n=200_000, seed=0, acquisitions=None):
    """Predicted std is exactly half the spread of the real error, and varies from pixel to pixel."""
    rng = np.random.default_rng(seed)
    std = rng.uniform(0.01, 0.1, n)
    error = rng.normal(0.0, 2 * std)
    return C.Pixels(split, tuple(acquisitions or [f"{split}{i}" for i in range(3)]), std, error, samples=16)


def test_linear_fit_recovers_a_known_miscalibration():
    calibration, on_val = C.fit(half_std_pixels("val"), "linear", bins=20)
    assert calibration.params["a"] == pytest.approx(2.0, abs=0.05)
    assert calibration.params["b"] == pytest.approx(0.0, abs=0.003)
    # before: RMV is half the RMSE in every bin -> UCE = 0.5; after: ~0
    assert on_val.uce_before == pytest.approx(0.5, abs=0.01)
    assert on_val.uce_after < 0.02
    assert on_val.in_sample
    on_test = C.judge(calibration, half_std_pixels("test", seed=1))
    assert on_test.uce_before == pytest.approx(0.5, abs=0.01)
    assert on_test.uce_after < 0.02 and not on_test.in_sample
    assert len(on_test.bins) == 20


def test_calibrated_pixels_are_left_alone():
    rng = np.random.default_rng(3)
    std = rng.uniform(0.01, 0.1, 100_000)
    calibration, on_val = C.fit(C.Pixels("val", ("v",), std, rng.normal(0, std)), "linear")
    assert calibration.params["a"] == pytest.approx(1.0, abs=0.05)
    assert on_val.uce_before < 0.02


def test_uce_by_hand():
    # |1 - 2| and |2 - 2| -> mean 0.5; mean RMSE 2 -> 0.25
    assert C.uce([1.0, 2.0], [2.0, 2.0]) == pytest.approx(0.25)
    # an empty bin (NaN statistics) does not count
    assert C.uce([1.0, 2.0, np.nan], [2.0, 2.0, np.nan]) == pytest.approx(0.25)
    assert C.uce([0.5, 1.5, 3.0], [1.0, 1.0, 1.0]) == pytest.approx((0.5 + 0.5 + 2.0) / 3 / 1.0)
    assert C.uce([0.0], [0.0]) is None  # no error at all: undefined, not NaN


def test_error_ratio_tells_an_informative_std_from_a_constant():
    informative, _ = C.fit(half_std_pixels("val"))
    ratio = C.error_ratio(C.judge(informative, half_std_pixels("test", seed=2)).bins)
    assert ratio > 5  # top-bin std ~0.098 vs bottom ~0.012
    rng = np.random.default_rng(4)
    useless = C.Pixels("val", ("v",), rng.uniform(0.01, 0.1, 50_000), rng.normal(0, 0.05, 50_000))
    calibration, on_val = C.fit(useless)
    assert on_val.uce_after < 0.05  # well calibrated on average...
    assert C.error_ratio(on_val.bins) == pytest.approx(1.0, abs=0.1)  # ...but says nothing per pixel
    table = C.bin_table("val", np.array([0.1, 0.3]), np.array([0.1, 0.4]), np.array([0.0, 0.2, 0.4]))
    assert C.error_ratio(table) == pytest.approx(4.0)


def test_bin_table_by_hand():
    std = np.array([0.1, 0.1, 0.3, 0.3])
    error = np.array([0.1, -0.3, 0.2, 0.2])
    table = C.bin_table("val", std, error, np.array([0.0, 0.2, 0.4]), calibrated=2 * std)
    assert table["count"].tolist() == [2, 2]
    assert table["rmv"].tolist() == pytest.approx([0.1, 0.3])
    assert table["rmse"].tolist() == pytest.approx([np.sqrt((0.01 + 0.09) / 2), 0.2])
    assert table["calibrated_rmv"].tolist() == pytest.approx([0.2, 0.6])
    # values beyond the (val) edges fall into the end bins rather than out of the table
    assert C.assign(np.array([-1.0, 9.0]), np.array([0.0, 0.2, 0.4])).tolist() == [0, 1]


def test_quantile_bins_are_equally_filled_and_survive_constant_std():
    std = np.random.default_rng(0).uniform(size=10_000)
    edges = C.quantile_edges(std, 20)
    counts = np.bincount(C.assign(std, edges))
    assert len(counts) == 20 and counts.min() >= 499 and counts.max() <= 501
    flat = C.Pixels("val", ("v",), np.full(1000, 0.05), np.random.default_rng(1).normal(0, 0.1, 1000))
    calibration, on_val = C.fit(flat)
    assert len(on_val.bins) == 1
    assert calibration.apply(np.array([0.05]))[0] == pytest.approx(0.1, rel=0.1)


def test_judging_on_the_fit_split_is_refused():
    val = half_std_pixels("val", n=5000)
    calibration, _ = C.fit(val)
    with pytest.raises(C.CalibrationLeak, match="fitted on the val split"):
        C.judge(calibration, val)
    with pytest.raises(C.CalibrationLeak, match="val0"):  # another name, same images
        C.judge(calibration, half_std_pixels("test", n=5000, acquisitions=["val0", "t1"]))
    C.judge(calibration, half_std_pixels("test", n=5000))  # held-out: fine


def test_unknown_method_is_an_input_error():
    with pytest.raises(InputError, match="calibrate.method"):
        C.fit(half_std_pixels("val", n=1000), method="isotonic-typo")


def test_calibrate_model_on_prediction_files(tmp_path):
    from flowrestore.analysis.plots import calibration_curve

    run = make_run(tmp_path, shape=(96, 96), test=2, val=2, noise=0.05, std_ratio=0.5, regression=False)
    val = pairs_of_split(run["manifest"], run["convert"], "val")
    test = pairs_of_split(run["manifest"], run["convert"], "test")
    fitted = C.calibrate_model("hm", val, run["predict"], "linear", bins=20)
    C.write_json(fitted, tmp_path / "hm.json")
    calibration = C.load(tmp_path / "hm.json")
    # stored std is half the real error spread (constant std -> one bin, scale-only fit)
    assert calibration.apply(np.array([0.025]))[0] == pytest.approx(0.05, rel=0.05)
    assert calibration.samples == 4 and calibration.fit_acquisitions == ("v0", "v1")
    summary, bins = C.judge_model(fitted, test, run["predict"])
    assert summary["val"]["uce_before"] == pytest.approx(0.5, abs=0.03) and summary["val"]["in_sample"]
    assert summary["test"]["uce_before"] == pytest.approx(0.5, abs=0.03) and not summary["test"]["in_sample"]
    assert summary["test"]["uce_after"] < 0.05
    # Gaussian errors, std half their spread: +-1.96 std covers P(|z| < 0.98) = 67%; calibrated: 95%
    coverage = summary["test"]["coverage"]
    assert coverage["gaussian_before"]["95"] == pytest.approx(0.673, abs=0.02)
    assert coverage["gaussian_after"]["95"] == pytest.approx(0.95, abs=0.01)
    assert coverage["samples"] is None  # 1 of 4 samples kept: no empirical interval
    assert "95%" in summary["sentence"] and "std" in summary["sentence"]
    assert summary["val"]["acquisitions"] == ["v0", "v1"] and summary["test"]["acquisitions"] == ["t0", "t1"]
    assert summary["val"]["pixels"] == 2 * 96 * 96
    assert list(bins.columns) == C.BIN_COLUMNS and set(bins["split"]) == {"val", "test"}
    rows = summary["test"]["per_acquisition"]
    assert [r["acquisition"] for r in rows] == ["t0", "t1"]
    assert all(r["uce_before"] == pytest.approx(0.5, abs=0.05) and r["uce_after"] < 0.08 for r in rows)
    C.write_json(summary, tmp_path / "hm_test.json")
    back = json.loads((tmp_path / "hm_test.json").read_text())
    assert back["method"] == "linear" and back["calibration"]["params"].keys() == {"a", "b"}
    calibration_curve(bins, summary, tmp_path / "hm.png")
    assert (tmp_path / "hm.png").read_bytes()[:4] == b"\x89PNG"


def test_judging_on_fit_acquisitions_is_refused_through_the_files(tmp_path):
    run = make_run(tmp_path, shape=(48, 48), test=1, val=2, regression=False)
    val = pairs_of_split(run["manifest"], run["convert"], "val")
    fitted = C.calibrate_model("hm", val, run["predict"])
    with pytest.raises(C.CalibrationLeak, match=r"\['v0', 'v1'\] were used to fit"):
        C.judge_model(fitted, val, run["predict"])  # the val images handed over as test images


def gaussian_toy(split, k, n=200_000, scale=1.0, seed=0, d0=8.0, s0=0.05):
    """Pixels whose posterior is known: true variances sigma^2 follow a scaled inverse chi-square
    prior (d0, s0^2); the target and K samples are drawn from N(mu, sigma^2), the sampler's spread
    multiplied by `scale` (1: a perfect sampler). Returns the pixels and the true sigma."""
    rng = np.random.default_rng(seed)
    sigma = np.sqrt(d0 * s0**2 / rng.chisquare(d0, n))
    mu = rng.uniform(0, 1, n)
    target = mu + sigma * rng.standard_normal(n)
    samples = mu + scale * sigma * rng.standard_normal((k, n))
    mmse, std, inside = C.sample_statistics(samples, target)
    return C.Pixels(split, (f"{split}{seed}",), std, mmse - target, k, inside), sigma


def test_smallk_recovers_the_analytic_std_of_a_perfect_sampler():
    k, d0, s0 = 4, 8.0, 0.05
    val, _ = gaussian_toy("val", k, d0=d0, s0=s0)
    test, _ = gaussian_toy("test", k, d0=d0, s0=s0, seed=1)
    calibration, _ = C.fit(val, "smallk")
    assert calibration.params["d0"] == pytest.approx(d0, rel=0.1)
    assert calibration.params["s0"] == pytest.approx(s0, rel=0.02)
    # the ideal: E[sigma^2 | s^2] under the true prior, times 1 + 1/K for the MMSE of K samples
    ideal = np.sqrt((d0 * s0**2 + (k - 1) * test.std**2) / (d0 + k - 3) * (1 + 1 / k))
    assert np.sqrt(np.mean((calibration.apply(test.std) / ideal - 1) ** 2)) < 0.03
    verdict = C.judge(calibration, test)
    assert verdict.uce_before > 0.15  # 4 samples: the raw std misleads bin by bin
    assert verdict.uce_after < 0.03
    # given s^2 the error is Student-t with n = d0 + K - 1 degrees of freedom, of variance E[sigma^2|s^2](1+1/K):
    # a Gaussian interval of that variance covers P(|t_n| <= z sqrt(n / (n - 2)))
    from scipy.stats import t

    n = d0 + k - 1
    for level in (0.68, 0.95):
        expected = 2 * t.cdf(C.gaussian_z(level) * np.sqrt(n / (n - 2)), n) - 1
        assert verdict.coverage_after[level] == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("method", ["linear", "isotonic"])
def test_error_fits_recover_a_sampler_half_as_wide(method):
    k = 32
    val, _ = gaussian_toy("val", k, scale=0.5)
    test, sigma = gaussian_toy("test", k, scale=0.5, seed=1)
    calibration, _ = C.fit(val, method)
    verdict = C.judge(calibration, test)
    assert verdict.uce_before == pytest.approx(0.5, abs=0.05)
    assert verdict.uce_after < 0.03
    assert verdict.coverage_before[0.95] < 0.75
    assert verdict.coverage_after[0.95] == pytest.approx(0.95, abs=0.015)
    # per bin, the calibrated RMV is the analytic one: sigma * sqrt(1 + 1/K)
    index = C.assign(test.std, C.quantile_edges(test.std))
    ideal = np.sqrt(np.bincount(index, sigma**2 * (1 + 1 / k)) / np.bincount(index))
    got = np.sqrt(np.bincount(index, calibration.apply(test.std) ** 2) / np.bincount(index))
    assert np.abs(got / ideal - 1).max() < 0.08


def test_samples_quantiles_of_a_perfect_sampler_cover_less_than_their_level():
    # The target is one more exchangeable draw, so its rank among the K + 1 is uniform, and numpy's
    # interpolated quantiles at p lie at rank p (K - 1) + 1: they cover level * (K - 1) / (K + 1),
    # short of the level at any finite K (95% -> 89% at K = 32); nearly so, as the interpolation is
    # done in intensity, not in probability.
    for k in (16, 32):
        test, _ = gaussian_toy("test", k, n=100_000)
        for level in (0.68, 0.95):
            assert test.inside[level].mean() == pytest.approx(level * (k - 1) / (k + 1), abs=0.015)


def test_calibration_survives_json_and_refuses_another_k(tmp_path):
    val, _ = gaussian_toy("val", 8, n=20_000)
    val = dataclasses.replace(val, intensity=np.random.default_rng(5).uniform(0, 1, val.std.size))
    for method in C.METHODS:
        calibration, _ = C.fit(val, method)
        C.write_json({"calibration": calibration.to_json()}, tmp_path / f"{method}.json")
        back = C.load(tmp_path / f"{method}.json")
        assert np.allclose(back.apply(val.std, val.intensity), calibration.apply(val.std, val.intensity))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match="broken.json.*rerun rule calibrate"):
        C.load(tmp_path / "broken.json")


def test_subsampling_caps_the_pixels(tmp_path):
    run = make_run(tmp_path, shape=(64, 64), test=1, val=2, regression=False)
    pixels = C.collect(pairs_of_split(run["manifest"], run["convert"], "val"), run["predict"], "hm", "val", max_pixels=1000)
    assert pixels.std.size == 1000 and pixels.samples == 4


def test_regression_model_cannot_be_calibrated(tmp_path):
    run = make_run(tmp_path, test=1, val=1)
    with pytest.raises(InputError, match="no std_raw channel"):
        C.collect(pairs_of_split(run["manifest"], run["convert"], "val"), run["predict"], "reg", "val")


def test_per_acquisition_pixels_show_the_spread_a_pooled_uce_hides():
    # acquisition a: std equals the error spread (UCE 0); b: std half of it (RMV/RMSE = 0.5, UCE 0.5)
    rng = np.random.default_rng(3)
    std = rng.uniform(0.02, 0.1, 40_000)
    error = rng.normal(0, std)
    owner = np.repeat([0, 1], 20_000).astype(np.int32)
    shown = np.where(owner == 0, std, std / 2)
    pixels = C.Pixels("test", ("a", "b"), shown, error, owner=owner)
    parts = dict(C.by_acquisition(pixels))
    assert parts.keys() == {"a", "b"} and parts["a"].std.size == parts["b"].std.size == 20_000
    identity = C.Calibration("linear", {"a": 1.0, "b": 0.0}, "val", ("v",), 0)
    uce = {name: C._judgement(identity, part, 20, False).uce_before for name, part in parts.items()}
    assert uce["a"] == pytest.approx(0.0, abs=0.03) and uce["b"] == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="owner"):
        C.by_acquisition(C.Pixels("test", ("a",), std, error))


def _banded_pixels(seed, n=200_000):
    # error sd = raw std x (0.5 + 2 x intensity): one std map mixes error scales (heavy tails)
    rng = np.random.default_rng(seed)
    std, intensity = rng.uniform(0.02, 0.1, n), rng.uniform(0, 1, n)
    return C.Pixels("val" if seed == 0 else "test", (f"a{seed}",), std, rng.normal(0, std * (0.5 + 2 * intensity)),
                    intensity=intensity)


def test_intensity_bands_restore_gaussian_coverage_where_one_std_map_cannot():
    val, test = _banded_pixels(0), _banded_pixels(1)
    covered = {}
    for method in ("isotonic", "isotonic_intensity"):
        calibration, _ = C.fit(val, method)
        covered[method] = C.judge(calibration, test).coverage_after
    # within a quartile band the error sd still varies by (0.5 + 2 i) over i in the band: close to Gaussian
    assert covered["isotonic_intensity"][0.68] == pytest.approx(0.683, abs=0.025)
    assert covered["isotonic_intensity"][0.95] == pytest.approx(0.95, abs=0.01)
    # one map for all intensities: a scale mixture, too wide at 68% and too narrow at 95%
    assert covered["isotonic"][0.68] > 0.72 and covered["isotonic"][0.95] < 0.94
    with pytest.raises(ValueError, match="intensity"):
        C.fit(C.Pixels("val", ("v",), val.std, val.error), "isotonic_intensity")


def test_one_scale_predictions_are_calibrated_in_the_units_predict_applies(tmp_path):
    # A one-scale model (photon counts, fixed range 0-4000) restores into the target's raw units;
    # predict maps std_raw / 4000, so the fit must see that, not the target's percentile span.
    from test_evaluate import write_prediction

    run = make_run(tmp_path, shape=(64, 64), test=1, val=1, regression=False)
    pair = pairs_of_split(run["manifest"], run["convert"], "val")[0]
    target = np.asarray(load_image(pair.target_path), np.float64)
    rng = np.random.default_rng(0)
    std_raw = rng.uniform(2, 20, target.shape)
    mmse = target + rng.normal(0, 2 * std_raw)
    path = tmp_path / "os" / "hm" / f"{pair.acquisition}.ome.zarr"
    write_prediction(path, {"mmse": mmse, "std": std_raw, "std_raw": std_raw}, "hm", "flow_prior", (0.0, 4000.0),
                     one_scale=True)
    pixels = C.collect([pair], tmp_path / "os", "hm", "val")
    np.testing.assert_allclose(np.sort(pixels.std), np.sort(std_raw.ravel() / 4000), rtol=1e-5)
    np.testing.assert_allclose(np.sort(pixels.error), np.sort((mmse - target).ravel() / 4000), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.sort(pixels.intensity), np.sort(mmse.ravel() / 4000), rtol=1e-5)
