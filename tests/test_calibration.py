import json

import numpy as np
import pandas as pd
import pytest

from flowrestore import calibration as C
from flowrestore.errors import InputError
from flowrestore.evaluate import pairs_of_split

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
    assert len(calibration.edges) == 21


def test_calibrated_pixels_are_left_alone():
    rng = np.random.default_rng(3)
    std = rng.uniform(0.01, 0.1, 100_000)
    calibration, on_val = C.fit(C.Pixels("val", ("v",), std, rng.normal(0, std)))
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
    assert len(calibration.edges) == 2  # one bin
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
    from flowrestore.plots import calibration_curve

    run = make_run(tmp_path, shape=(96, 96), test=2, val=2, noise=0.05, std_ratio=0.5, regression=False)
    val = pairs_of_split(run["manifest"], run["convert"], "val")
    test = pairs_of_split(run["manifest"], run["convert"], "test")
    summary, bins = C.calibrate_model("hm", val, test, run["predict"], bins=20)
    # stored std is half the real error spread (constant std -> one bin, scale-only fit)
    assert summary["a"] * 0.025 + summary["b"] == pytest.approx(0.05, rel=0.05)
    assert summary["uce_val_before"] == pytest.approx(0.5, abs=0.03)
    assert summary["uce_test_before"] == pytest.approx(0.5, abs=0.03)
    assert summary["uce_test_after"] < 0.05
    assert summary["val"]["acquisitions"] == ["v0", "v1"] and summary["test"]["acquisitions"] == ["t0", "t1"]
    assert summary["val"]["pixels"] == 2 * 96 * 96
    assert list(bins.columns) == C.BIN_COLUMNS and set(bins["split"]) == {"val", "test"}
    C.write_results(summary, bins, tmp_path / "hm.json", tmp_path / "hm_bins.tsv")
    back = json.loads((tmp_path / "hm.json").read_text())
    assert back["method"] == "linear" and {"a", "b", "uce_val_before", "uce_val_after", "uce_test_before",
                                           "uce_test_after", "bin_edges"} <= set(back)
    assert len(pd.read_csv(tmp_path / "hm_bins.tsv", sep="\t")) == len(bins)
    calibration_curve(bins, summary, tmp_path / "hm.png")
    assert (tmp_path / "hm.png").read_bytes()[:4] == b"\x89PNG"


def test_subsampling_caps_the_pixels(tmp_path):
    run = make_run(tmp_path, shape=(64, 64), test=1, val=2, regression=False)
    pixels = C.collect(pairs_of_split(run["manifest"], run["convert"], "val"), run["predict"], "hm", "val", max_pixels=1000)
    assert pixels.std.size == 1000 and pixels.samples == 4


def test_regression_model_cannot_be_calibrated(tmp_path):
    run = make_run(tmp_path, test=1, val=1)
    with pytest.raises(InputError, match="no std channel"):
        C.collect(pairs_of_split(run["manifest"], run["convert"], "val"), run["predict"], "reg", "val")
