import json

import numpy as np
import pytest
import torch
import zarr

from flowrestore.inference import engine
from flowrestore.inference import predict as predict_module
from flowrestore.errors import InputError
from flowrestore.data.io import open_image
from flowrestore.inference.predict import finalize, partial_path, predict, prepare, read_prediction, run_shard
from flowrestore.training.loop import train_model

from fixtures import TINY_NET, make_acquisitions

# Small tiles and blocks so that a 200x168 image spans several blocks and many overlapping tiles;
# the default solver, whose one step at nfe=2 also evaluates the network mid-step.
SETTINGS = dict(samples=3, group=2, nfe=2, solver="midpoint", tile=48, overlap=12, batch=5, keep_samples=1, seed=3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    data = make_acquisitions(root / "data", n=2, shape=(200, 168), chunks=(32, 32))
    fast = dict(steps=2, batch_size=2, patch_size=32, val_every=2, checkpoint_every=2, val_batches=1)
    models = {}
    for method in ("guided_cfm", "regression"):
        train_model(method, method, TINY_NET, fast, data[:1], data[1:], root / method)
        models[method] = root / method / "checkpoint.pt"
    return root, data, models


def _run(setup, name, **overrides):
    root, data, models = setup
    out = root / f"{name}.ome.zarr"
    predict(models[overrides.pop("method", "guided_cfm")], data[1].input_path, out, SETTINGS | overrides,
            normalization=data[1].input_norm)
    return out


def test_prediction_channels_units_and_metadata(setup):
    out = _run(setup, "basic", block=[64, 64])
    pred = read_prediction(out)
    assert list(pred) == ["mmse", "std", "std_raw", "sample_0", "mean_1", "mean_2"]
    np.testing.assert_allclose(pred["mean_1"], pred["sample_0"], rtol=1e-6)
    np.testing.assert_array_equal(pred["std"], pred["std_raw"])  # no calibration given
    assert zarr.open_group(str(out), mode="r").attrs["flowrestore"]["calibration"]["method"] == "none"
    for value in pred.values():
        assert value.shape == (200, 168) and np.isfinite(value).all()
    assert (pred["std"] > 0).all()
    # Raw intensity units: the network sees (x - low) / (high - low), so an input 3x + 5 read with the
    # percentiles moved the same way must give an MMSE 3 mmse + 5 and stds 3 std (same seeds, same tiles).
    from fixtures import write_tiff

    root, data, models = setup
    raw = open_image(data[1].input_path).data.compute().astype(np.float32)
    moved = write_tiff(root / "moved.ome.tif", 3 * raw + 5)
    norm = data[1].input_norm
    out2 = root / "moved.ome.zarr"
    predict(models["guided_cfm"], moved, out2, SETTINGS | dict(block=[64, 64]),
            normalization=type(norm)(low=3 * norm.low + 5, high=3 * norm.high + 5))
    pred2 = read_prediction(out2)
    span = float(np.abs(pred["mmse"]).max())
    np.testing.assert_allclose(pred2["mmse"], 3 * pred["mmse"] + 5, rtol=1e-4, atol=1e-4 * span)
    np.testing.assert_allclose(pred2["std"], 3 * pred["std"], rtol=1e-3, atol=1e-4 * span)
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    node = list(Reader(parse_url(str(out)))())[0]
    assert node.metadata["channel_names"] == list(pred)
    scale = node.metadata["coordinateTransformations"][0][0]["scale"]
    assert scale == [1.0, 0.1, 0.1]
    assert not partial_path(out).exists()
    from ome_zarr_models.v04 import Image

    Image.from_zarr(zarr.open_group(str(out), mode="r"))  # raises on metadata that breaks NGFF 0.4


def test_large_prediction_opens_in_napari_with_a_pyramid_and_windows(setup, tmp_path):
    """A prediction above the pyramid threshold, read by napari-ome-zarr's reader as napari would."""
    from napari_ome_zarr import napari_get_reader
    from ome_zarr_models.v04 import Image

    from fixtures import write_tiff
    from flowrestore.data.simulate import make_pair

    root, data, models = setup
    image = write_tiff(tmp_path / "big.ome.tif", make_pair((1040, 1030), 7)[0], pixel_size=0.25)
    out = tmp_path / "big.ome.zarr"
    predict(models["guided_cfm"], image, out, SETTINGS | dict(samples=2, nfe=1, solver="euler", tile=256, overlap=16,
                                                              block=[512, 512], batch=8, prefix_means=False))
    group = zarr.open_group(str(out), mode="r")
    Image.from_zarr(group)
    shapes = [(1040, 1030), (520, 515), (260, 258), (130, 129)]  # halved, rounding up, until one 256 chunk
    assert [group[str(k)].shape[1:] for k in range(4)] == shapes and "4" not in group
    level0 = group["0"][...]
    top = level0[:, :1040, :1030].reshape(level0.shape[0], 520, 2, 515, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(group["1"][...], top, rtol=1e-5, atol=1e-5)

    [(pyramid, meta, kind)] = napari_get_reader(str(out))(str(out))
    names = ["mmse", "std", "std_raw", "sample_0"]
    assert kind == "image" and meta["channel_axis"] == 0 and [p.shape[1:] for p in pyramid] == shapes
    assert meta["scale"] == pytest.approx([0.25, 0.25])
    assert meta["visible"] == [n in ("mmse", "std") for n in names]
    colormaps = [c.name for c in meta["colormap"]]
    assert colormaps[names.index("std")] != colormaps[names.index("mmse")]
    for values, (low, high) in zip(level0, meta["contrast_limits"]):
        assert values.min() <= low <= np.percentile(values, 1) < np.percentile(values, 99) <= high <= values.max()


def test_the_predict_process_keeps_freed_memory_for_reuse(setup, monkeypatch):
    # The glibc setting of allocator.py is the package's own doing: nobody has to export variables.
    from flowrestore.inference import allocator

    calls = []
    monkeypatch.setattr(allocator, "retain_freed_memory", lambda: calls.append(1) or True)
    _run(setup, "allocator", samples=1)
    assert calls == [1]

def test_result_does_not_depend_on_block_size(setup):
    a = read_prediction(_run(setup, "blocks64", block=[64, 64]))
    b = read_prediction(_run(setup, "blocks128", block=[128, 96]))
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-3 * np.abs(a[k]).max())


def test_one_versus_three_shards(setup):
    root, data, models = setup
    one = read_prediction(_run(setup, "shards1", block=[64, 64]))
    out = root / "shards3.ome.zarr"
    prepare(models["guided_cfm"], data[1].input_path, out, SETTINGS | {"block": [64, 64]}, data[1].input_norm)
    for shard in (2, 0, 1):  # any order, as separate jobs would
        # batch and group are runtime settings (not in the plan): the same ones for bitwise equality
        run_shard(models["guided_cfm"], out, shard, 3, batch=SETTINGS["batch"], group=SETTINGS["group"])
    finalize(out)
    three = read_prediction(out)
    for k in one:
        np.testing.assert_array_equal(one[k], three[k])


def test_killed_prediction_resumes_to_identical_bytes(setup, monkeypatch):
    root, data, models = setup
    reference = _run(setup, "uninterrupted", block=[64, 64])
    out = root / "resumed.ome.zarr"
    real = engine.Restorer.restore
    calls = {"n": 0}

    def die_on_third_block(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(engine.Restorer, "restore", die_on_third_block)
    with pytest.raises(KeyboardInterrupt):
        predict(models["guided_cfm"], data[1].input_path, out, SETTINGS | {"block": [64, 64]}, data[1].input_norm)
    assert not out.exists() and partial_path(out).exists()
    monkeypatch.setattr(engine.Restorer, "restore", real)
    stats = predict(models["guided_cfm"], data[1].input_path, out, SETTINGS | {"block": [64, 64]}, data[1].input_norm)
    assert stats["blocks"] == 12 - 2  # 4x3 blocks, two were already done
    a = zarr.open_group(str(reference), mode="r")["0"][...]
    b = zarr.open_group(str(out), mode="r")["0"][...]
    assert a.tobytes() == b.tobytes()


def test_changed_settings_do_not_reuse_a_stale_partial_store(setup):
    root, data, models = setup
    out = root / "stale.ome.zarr"
    prepare(models["guided_cfm"], data[1].input_path, out, SETTINGS, data[1].input_norm)
    run_shard(models["guided_cfm"], out, 0, 2)
    prepare(models["guided_cfm"], data[1].input_path, out, SETTINGS | {"seed": 4}, data[1].input_norm)
    assert json.loads((partial_path(out) / predict_module.PLAN_FILE).read_text())["sampling"]["seed"] == 4
    assert not any((partial_path(out) / predict_module.DONE_DIR).iterdir())


def test_regression_runs_through_the_same_path(setup):
    pred = read_prediction(_run(setup, "care", method="regression", block=[64, 64]))
    assert list(pred) == ["mmse"]
    assert np.isfinite(pred["mmse"]).all()


def test_step_stitching_runs_and_differs_little_from_tile_stitching(setup):
    tile = read_prediction(_run(setup, "tilemode", block=[256, 256]))
    step = read_prediction(_run(setup, "stepmode", block=[256, 256], stitching="step"))
    assert np.isfinite(step["mmse"]).all()
    corr = np.corrcoef(tile["mmse"].ravel(), step["mmse"].ravel())[0, 1]
    assert corr > 0.9


def test_image_smaller_than_tile_is_padded(setup):
    root, data, models = setup
    pred = read_prediction(_run(setup, "bigtile", tile=256, block=[256, 256]))
    assert pred["mmse"].shape == (200, 168) and np.isfinite(pred["mmse"]).all()


def test_3d_volume(tmp_path):
    data = make_acquisitions(tmp_path / "data", n=2, shape=(12, 40, 40), chunks=(8, 16, 16))
    fast = dict(steps=2, batch_size=2, patch_size=[8, 16, 16], val_every=2, checkpoint_every=2, val_batches=1)
    train_model("m3", "guided_cfm", TINY_NET, fast, data[:1], data[1:], tmp_path / "m3")
    out = tmp_path / "p3.ome.zarr"
    predict(tmp_path / "m3" / "checkpoint.pt", data[1].input_path, out,
            SETTINGS | {"tile": [8, 24, 24], "overlap": [2, 4, 4], "block": [8, 16, 16]})
    pred = read_prediction(out)
    assert pred["mmse"].shape == (12, 40, 40) and np.isfinite(pred["std"]).all()


def test_model_of_other_dimensionality_is_refused(setup, tmp_path):
    root, data, models = setup
    vol = make_acquisitions(tmp_path, n=1, shape=(8, 32, 32))
    with pytest.raises(InputError, match="3D but model"):
        prepare(models["guided_cfm"], vol[0].input_path, tmp_path / "x.ome.zarr", SETTINGS)


def test_calibration_is_applied_block_by_block_and_recorded(setup, tmp_path):
    from flowrestore.analysis.calibration import Calibration, write_json

    root, data, models = setup
    calibration = Calibration("linear", {"a": 2.0, "b": 0.01}, "val", ("v0",), SETTINGS["samples"])
    write_json({"calibration": calibration.to_json()}, tmp_path / "hm.json")
    out = tmp_path / "calibrated.ome.zarr"
    prepare(models["guided_cfm"], data[1].input_path, out, SETTINGS | {"block": [64, 64]}, data[1].input_norm)
    run_shard(models["guided_cfm"], out)
    finalize(out, tmp_path / "hm.json")
    pred = read_prediction(out)
    scale = data[1].input_norm.scale  # the calibration works in normalised units
    np.testing.assert_allclose(pred["std"], (2.0 * pred["std_raw"] / scale + 0.01) * scale, rtol=1e-5)
    meta = zarr.open_group(str(out), mode="r").attrs["flowrestore"]["calibration"]
    assert meta["method"] == "linear" and meta["params"] == {"a": 2.0, "b": 0.01} and meta["source"].endswith("hm.json")


def test_intensity_calibration_reads_the_mmse_in_normalised_units(setup, tmp_path):
    from flowrestore.analysis.calibration import Calibration, write_json

    root, data, models = setup
    # two bands split at normalised intensity 0.5: std x1 below, x3 above (isotonic maps through the origin)
    band = lambda a: {"x": [0.01, 1.0], "y": [0.01 * a, a]}  # noqa: E731
    calibration = Calibration("isotonic_intensity", {"edges": [0.0, 0.5, 1.0], "maps": [band(1.0), band(3.0)]},
                              "val", ("v0",), SETTINGS["samples"])
    write_json({"calibration": calibration.to_json()}, tmp_path / "hm.json")
    out = tmp_path / "banded.ome.zarr"
    prepare(models["guided_cfm"], data[1].input_path, out, SETTINGS | {"block": [64, 64]}, data[1].input_norm)
    run_shard(models["guided_cfm"], out)
    finalize(out, tmp_path / "hm.json")
    pred = read_prediction(out)
    norm = data[1].input_norm
    bright = (pred["mmse"] - norm.low) / norm.scale >= 0.5
    assert 0 < bright.sum() < bright.size  # both bands present
    np.testing.assert_allclose(pred["std"], np.where(bright, 3.0, 1.0) * pred["std_raw"], rtol=1e-4)


def test_calibration_fitted_for_another_k_is_refused(setup, tmp_path):
    from flowrestore.analysis.calibration import Calibration, write_json

    root, data, models = setup
    write_json({"calibration": Calibration("linear", {"a": 2.0, "b": 0.0}, "val", ("v0",), 16).to_json()},
               tmp_path / "hm.json")
    out = tmp_path / "k.ome.zarr"
    prepare(models["guided_cfm"], data[1].input_path, out, SETTINGS, data[1].input_norm)
    run_shard(models["guided_cfm"], out)
    with pytest.raises(InputError, match="hm.json: was fitted on predictions with 16 samples.*rerun rule calibrate"):
        finalize(out, tmp_path / "hm.json")
    assert not out.exists() and partial_path(out).exists()  # nothing published, the restored blocks kept
