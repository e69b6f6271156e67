"""The evaluate step on a tiny fake run: converted pairs, a manifest and hand-made prediction OME-Zarrs."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from flowrestore.analysis import evaluate as E
from flowrestore.errors import InputError
from flowrestore.data.io import create_ome_zarr, write_ome_zarr
from flowrestore.data.pairing import read_rows, write_rows

PIXEL = 0.2


def _texture(shape, seed):
    rng = np.random.default_rng(seed)
    x = ndi.gaussian_filter(rng.standard_normal(shape), 2.0, mode="wrap")
    return (x - x.min()) / (x.max() - x.min())


def write_prediction(path, channels: dict[str, np.ndarray], model: str, method: str, norm: tuple[float, float],
                     samples: int = 4, one_scale: bool = False):
    """A prediction OME-Zarr as predict.finalize leaves it (channels in the input's raw units)."""
    names = list(channels)
    shape = next(iter(channels.values())).shape
    array = create_ome_zarr(path, shape, np.float32, "YX", (PIXEL, PIXEL), channels=names, fill_value=float("nan"),
                            attrs={"flowrestore": {
                                "model": model, "method": method, "input": "x", "normalization": {"low": norm[0], "high": norm[1]},
                                "one_scale": one_scale,
                                "sampling": {"samples": samples, "nfe": 2, "solver": "heun", "keep_samples": int("sample_0" in names)},
                                "tile": [64, 64], "overlap": [8, 8], "channels": names}})
    array[...] = np.stack([channels[n] for n in names]).astype(np.float32)


def make_run(root: Path, shape=(64, 64), test=2, val=2, noise=0.05, std_ratio=0.5, keep_sample=True, regression=True,
             splits=None, seed=0) -> dict:
    """A results tree: manifest, converted input/target, predictions of a guided model `hm` (K=4) and `reg`.

    The MMSE's normalised error is N(0, noise^2) and the stored std is `std_ratio * noise`, so a
    calibration must find a = 1 / std_ratio, b = 0.
    """
    rng = np.random.default_rng(seed)
    names = splits or {**{f"t{i}": "test" for i in range(test)}, **{f"v{i}": "val" for i in range(val)}, "r0": "train"}
    rows = []
    for i, (acq, split) in enumerate(names.items()):
        truth = _texture(shape, seed * 100 + i)
        target = 100 + 1000 * truth
        widefield = 20 + 150 * ndi.gaussian_filter(truth, 3) + 2 * rng.standard_normal(shape)
        for role, data in (("input", widefield), ("target", target)):
            write_ome_zarr(root / "convert" / role / f"{acq}.ome.zarr", data.astype(np.float32), "YX", (PIXEL, PIXEL))
        tn = tuple(float(v) for v in np.percentile(target, [0.1, 99.9]))
        inn = tuple(float(v) for v in np.percentile(widefield, [0.1, 99.9]))
        rows.append({"pair_id": acq, "split": split, "input": f"{acq}_wf.tif", "target": f"{acq}_confocal.tif",
                     "axes": "YX", "shape": "x".join(map(str, shape)), "dtype": "float32", "pixel_size": f"{PIXEL},{PIXEL}",
                     "input_low": inn[0], "input_high": inn[1], "target_low": tn[0], "target_high": tn[1]})
        if split == "train":
            continue
        target_n = (target - tn[0]) / (tn[1] - tn[0])
        raw = lambda n: inn[0] + n * (inn[1] - inn[0])  # noqa: E731  normalised -> input units
        mmse_n = target_n + noise * rng.standard_normal(shape)
        sample_n = target_n + 2 * noise * rng.standard_normal(shape)
        std = np.full(shape, std_ratio * noise * (inn[1] - inn[0]))
        channels = {"mmse": raw(mmse_n), "std": std, "std_raw": std}
        if keep_sample:
            channels["sample_0"] = raw(sample_n)
        channels |= {"mean_1": raw(sample_n), "mean_2": raw(target_n + 1.5 * noise * rng.standard_normal(shape))}
        write_prediction(root / "predict" / "hm" / f"{acq}.ome.zarr", channels, "hm", "guided_cfm", inn)
        if regression:
            write_prediction(root / "predict" / "reg" / f"{acq}.ome.zarr",
                             {"mmse": raw(target_n + 2 * noise * rng.standard_normal(shape))}, "reg", "regression", inn, 1)
    write_rows(rows, root / "pairs.tsv")
    models = {"hm": "guided_cfm"} | ({"reg": "regression"} if regression else {})
    return {"manifest": root / "pairs.tsv", "convert": root / "convert", "predict": root / "predict", "models": models,
            "root": root}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("evaluate"))


def _evaluate(run, **kw):
    return E.evaluate(run["manifest"], run["convert"], run["predict"], run["models"], **kw)


def test_metrics_table_one_row_per_acquisition_and_estimate(run):
    table = _evaluate(run)
    assert len(table) == 2 * 4
    assert set(zip(table["model"], table["estimate"])) == {("input", "input"), ("reg", "mmse"), ("hm", "mmse"), ("hm", "sample_0")}
    assert list(table.columns[:5]) == ["acquisition", "model", "method", "estimate", "label"]
    assert {"psnr", "psnr_affine", "ssim", "ms_ssim", "micro_ssim", "micro_ms3im", "frc_1/7_um", "frc_0.5_um",
            "missing"} <= set(table.columns)
    # 64x64 test images: only MicroMS3IM, whose 5 scales need 176 pixels per edge, is missing, and says why.
    assert table["micro_ms3im"].isna().all() and table["missing"].str.startswith("micro_ms3im: image 64x64").all()
    assert ((table["micro_ssim"] > 0) & (table["micro_ssim"] <= 1)).all()
    assert (table["pixel_size_um"] == PIXEL).all()
    mmse = table[(table["model"] == "hm") & (table["estimate"] == "mmse")]
    # error N(0, 0.05^2) in target-normalised units -> PSNR = -20 log10(0.05) = 26.0 dB: the units are mapped right
    assert mmse["psnr"].to_numpy() == pytest.approx(26.02, abs=0.3)
    reg = table[table["model"] == "reg"]
    assert reg["psnr"].to_numpy() == pytest.approx(20.0, abs=0.3)
    inp = table[table["model"] == "input"]
    assert (mmse["psnr"].to_numpy() > inp["psnr"].to_numpy()).all()
    # FRC resolution is in micrometres: at least Nyquist, 2 pixels of 0.2 µm
    assert (table["frc_1/7_um"] >= 2 * PIXEL - 1e-9).all()


def test_summary_gain_and_comparisons(run):
    table = _evaluate(run)
    summary = E.summarize(table).set_index("label")
    per_image = table.pivot(index="acquisition", columns="label", values="psnr")
    gain = per_image["hm MMSE"] - per_image["input (widefield)"]
    assert summary.loc["hm MMSE", "psnr_gain_mean"] == pytest.approx(gain.mean())
    assert summary.loc["hm MMSE", "psnr_mean"] == pytest.approx(per_image["hm MMSE"].mean())
    assert summary.loc["hm MMSE", "images"] == 2
    comp = E.comparisons(table, run["models"])
    row = comp[(comp["a"] == "hm MMSE") & (comp["b"] == "reg (regression)") & (comp["metric"] == "psnr")].iloc[0]
    assert row["difference_mean"] == pytest.approx(6.0, abs=0.5) and row["a_better_in"] == 2


def test_missing_metrics_have_reasons_and_never_nan(tmp_path):
    # 12 px wide: SSIM fits (11 px window) but FRC needs 16 px; no posterior sample kept
    run = make_run(tmp_path, shape=(40, 12), test=1, val=1, keep_sample=False, regression=False)
    table = _evaluate(run)
    mmse = table[table["estimate"] == "mmse"].iloc[0]
    assert pd.isna(mmse["frc_1/7_um"]) and "smaller than 16 px" in mmse["missing"]
    assert pd.notna(mmse["psnr"]) and pd.notna(mmse["ssim"])
    sample = table[table["estimate"] == "sample_0"].iloc[0]
    assert all(pd.isna(sample[c]) for c in E.COLUMNS)
    assert "keep_samples" in sample["missing"]
    E.write_tsv(table, tmp_path / "m.tsv")
    text = (tmp_path / "m.tsv").read_text()
    assert "nan" not in text.lower() and "inf" not in text.lower().replace("infinite", "")
    back = E.read_tsv(tmp_path / "m.tsv")
    assert math.isnan(back.loc[back["estimate"] == "mmse", "frc_1/7_um"].iloc[0])  # an empty cell...
    assert "frc_1/7_um: image 40x12" in back.loc[back["estimate"] == "mmse", "missing"].iloc[0]  # ...with its reason
    summary = E.summarize(table)
    row = summary[summary["estimate"] == "mmse"].iloc[0]
    assert row["frc_1/7_um_missing"] == 1 and "missing in 1 of 1 images" in row["missing"]


def test_no_test_pairs_is_a_one_line_error(tmp_path):
    run = make_run(tmp_path, splits={"a": "train", "b": "val"})
    with pytest.raises(InputError) as info:
        _evaluate(run)
    message = str(info.value)
    assert str(run["manifest"]) in message and "no test pairs" in message and "Fix:" in message
    assert "\n" not in message


def test_prediction_of_wrong_shape_names_both_files(tmp_path):
    run = make_run(tmp_path, test=1, val=1, regression=False)
    bad = run["predict"] / "hm" / "t0.ome.zarr"
    write_prediction(bad, {"mmse": np.ones((64, 60)), "std": np.ones((64, 60))}, "hm", "guided_cfm", (0.0, 1.0))
    with pytest.raises(InputError) as info:
        _evaluate(run)
    message = str(info.value)
    assert str(bad) in message and str(run["convert"] / "target" / "t0.ome.zarr") in message
    assert "(64, 60)" in message and "(64, 64)" in message


def test_missing_prediction_is_an_input_error(tmp_path):
    run = make_run(tmp_path, test=1, val=1, regression=False)
    with pytest.raises(InputError, match="reg/t0.ome.zarr"):
        E.evaluate(run["manifest"], run["convert"], run["predict"], {"hm": "guided_cfm", "reg": "regression"})


def test_perception_distortion_curve(run):
    curve = E.perception_distortion(run["manifest"], run["convert"], run["predict"], run["models"])
    assert sorted(curve["samples"].unique()) == [1, 2, 4]  # mean_1, mean_2 and the MMSE (K = 4)
    assert set(curve["model"]) == {"hm"}
    assert len(curve) == 2 * 3
    means = curve.groupby("samples")["psnr"].mean()
    assert means[1] < means[2] < means[4]  # noise 2x, 1.5x, 1x the MMSE's
    assert curve["frc_1/7_um"].notna().all() and (curve["missing"] == "").all()


def test_prefix_channels_falls_back_to_the_sample():
    info = {"channels": ["mmse", "std", "sample_0", "sample_1"], "sampling": {"samples": 16}}
    assert E.prefix_channels(info) == [(1, "sample_0"), (16, "mmse")]
    info = {"channels": ["mmse", "std", "mean_1", "mean_2", "mean_4", "mean_8"], "sampling": {"samples": 16}}
    assert E.prefix_channels(info) == [(1, "mean_1"), (2, "mean_2"), (4, "mean_4"), (8, "mean_8"), (16, "mmse")]


def test_run_writes_all_tables_and_plots(run, tmp_path):
    from flowrestore.analysis.plots import example_crops, perception_distortion

    out = {k: tmp_path / f"{k}.tsv" for k in ("metrics", "summary", "pd", "comparisons")}
    E.run(run["manifest"], run["convert"], run["predict"], run["models"], out["metrics"], out["summary"], out["pd"],
          out["comparisons"])
    for path in out.values():
        assert pd.read_csv(path, sep="\t").shape[0] > 0
    perception_distortion(E.read_tsv(out["pd"]), E.baselines(E.read_tsv(out["summary"])), tmp_path / "pd.png")
    pair = E.pairs_of_split(run["manifest"], run["convert"])[0]
    panels = E.example_panels(pair, run["predict"], run["models"], size=32)
    assert panels["target"].shape == (32, 32) and set(panels["sampled"]["hm"]) == {"mmse", "sample", "std", "error"}
    example_crops(panels, tmp_path / "ex.png", title="t0", pixel_size=PIXEL)
    for name in ("pd.png", "ex.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_pixel_size_gives_frc_in_pixels(tmp_path):
    """One test pair without a known pixel size: every FRC of the split is in pixels (one unit per
    table), its pixel_size_um is empty, and the values are the µm ones divided by the pixel size."""
    known = make_run(tmp_path / "known")
    unknown = make_run(tmp_path / "unknown")
    rows = read_rows(unknown["manifest"])
    for r in rows:
        if r["pair_id"] == "t1":
            r["pixel_size"] = "unknown,unknown"
    write_rows(rows, unknown["manifest"])
    assert E.frc_unit(E.pairs_of_split(known["manifest"], known["convert"])) == "µm"
    assert E.frc_unit(E.pairs_of_split(unknown["manifest"], unknown["convert"])) == "pixels"
    in_um, in_px = _evaluate(known), _evaluate(unknown)
    assert in_px.set_index(["acquisition", "label"])["pixel_size_um"].isna().to_dict() == {
        (a, label): a == "t1" for a, label in zip(in_px["acquisition"], in_px["label"])}
    for column in ("frc_1/7_um", "frc_0.5_um"):
        np.testing.assert_allclose(in_px[column].to_numpy(), in_um[column].to_numpy() / PIXEL, rtol=1e-9)
    assert (in_px["frc_1/7_um"] >= 2 - 1e-9).all()  # Nyquist: 2 pixels
    curve = E.perception_distortion(unknown["manifest"], unknown["convert"], unknown["predict"], unknown["models"])
    curve_um = E.perception_distortion(known["manifest"], known["convert"], known["predict"], known["models"])
    np.testing.assert_allclose(curve["frc_1/7_um"].to_numpy(), curve_um["frc_1/7_um"].to_numpy() / PIXEL, rtol=1e-9)
