"""What viewers read: display windows, colours and pyramids, checked with the field's own readers
(ome-zarr-models validates the metadata, napari-ome-zarr's reader builds the layers napari shows)."""

import math

import numpy as np
import pytest
import tifffile
import zarr

from flowrestore.data import io
from flowrestore.data.ome_zarr import WindowStats, downsample, pyramid_factors


def napari_layers(path):
    """The (data, metadata, kind) tuples napari-ome-zarr hands to napari, without a GUI."""
    from napari_ome_zarr import napari_get_reader

    reader = napari_get_reader(str(path))
    assert reader is not None, f"napari-ome-zarr does not read {path}"
    return reader(str(path))


def validate(path):
    from ome_zarr_models.v04 import Image

    return Image.from_zarr(zarr.open_group(str(path), mode="r"))


def area_mean(a: np.ndarray, step) -> np.ndarray:
    """Mean over step-sized boxes; a box cut by the edge averages the voxels it holds (numpy only)."""
    padded = np.pad(a.astype(np.float64), [(0, -s % f) for s, f in zip(a.shape, step)], constant_values=np.nan)
    boxes = padded.reshape([n for s, f in zip(padded.shape, step) for n in (s // f, f)])
    return np.nanmean(boxes, axis=tuple(range(1, 2 * a.ndim, 2)))


# ---------------------------------------------------------------------------- display windows


def test_window_from_blocks_matches_percentiles_of_the_whole():
    rng = np.random.default_rng(1)
    data = rng.gamma(2.0, 50.0, (600, 700)).astype(np.float32)
    data[5, 5] = 1e6  # one hot pixel: the window must not stretch to it
    stats = WindowStats(data.size, budget=50_000)
    for rows in np.array_split(data, 7):
        stats.add(rows)
    window = stats.window()
    assert window["min"] == data.min() and window["max"] == data.max()
    # The subsample's 0.1/99.9 percentiles lie between the whole image's 0.05/0.2 and 99.8/99.95.
    assert np.percentile(data, 0.05) <= window["start"] <= np.percentile(data, 0.2)
    assert np.percentile(data, 99.8) <= window["end"] <= np.percentile(data, 99.95) < 1e6


def test_window_of_constant_and_non_finite_data():
    stats = WindowStats(100)
    stats.add(np.full(100, 7.0))
    stats.add(np.array([np.nan, np.inf]))
    window = stats.window()
    assert window["min"] == window["start"] == 7.0 and window["end"] > window["start"]


# ---------------------------------------------------------------------------- pyramids


def test_small_images_get_no_pyramid():
    assert pyramid_factors((1024, 1024), (256, 256)) == [(1, 1)]


def test_deep_stack_halves_z_only_while_deeper_than_a_chunk():
    # (130, 300, 40) with 64^3 chunks, by hand: Z and Y halve while larger than 64, X never does.
    factors = pyramid_factors((130, 300, 40), (64, 64, 64))
    assert factors == [(1, 1, 1), (2, 2, 1), (4, 4, 1), (4, 8, 1)]


def test_area_mean_keeps_integer_dtype_and_edges():
    a = np.array([[0, 1, 2], [3, 4, 6], [6, 8, 9]], dtype=np.uint16)
    out = downsample(a, (2, 2))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, [[2, 4], [7, 9]])  # (0+1+3+4)/4, (2+6)/2, (6+8)/2, 9: no zero padding


def test_converted_large_image_pyramid_shapes_scales_and_values(tmp_path):
    rng = np.random.default_rng(0)
    data = (rng.poisson(200, (1100, 1300)) + np.arange(1300)[None]).astype(np.uint16)
    src, dst = tmp_path / "big.ome.tif", tmp_path / "big.ome.zarr"
    tifffile.imwrite(src, data, ome=True, metadata={"axes": "YX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.3})
    io.convert(src, dst)
    group = zarr.open_group(str(dst), mode="r")
    # By hand: 1100x1300 halves (rounding up) until both edges fit in a 256 chunk.
    shapes = [(1100, 1300), (550, 650), (275, 325), (138, 163)]
    datasets = group.attrs["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["0", "1", "2", "3"]
    assert [group[d["path"]].shape for d in datasets] == shapes
    for level, d in enumerate(datasets):
        transforms = {t["type"]: t[t["type"]] for t in d["coordinateTransformations"]}
        assert transforms["scale"] == pytest.approx([0.3 * 2**level, 0.2 * 2**level])
        # A level's voxel centre is the centre of the 2^level x 2^level voxels it averages.
        assert transforms.get("translation", [0, 0]) == pytest.approx([0.3 * (2**level - 1) / 2,
                                                                       0.2 * (2**level - 1) / 2])
        assert group[d["path"]].dtype == np.uint16
    level = data
    for path in ("1", "2", "3"):
        expected = np.rint(area_mean(level, (2, 2))).astype(np.uint16)
        level = group[path][...]
        np.testing.assert_array_equal(level, expected)

    validate(dst)
    [(pyramid, meta, kind)] = napari_layers(dst)
    assert kind == "image" and [p.shape for p in pyramid] == shapes
    assert meta["scale"] == pytest.approx([0.3, 0.2])
    low, high = meta["contrast_limits"]
    assert data.min() <= low <= np.percentile(data, 1) and np.percentile(data, 99) <= high <= data.max()
    assert meta["visible"] is True
    assert meta["name"].startswith("big.ome.zarr")  # the output's name, not its temporary's


def test_converted_small_image_has_one_level_and_a_window(tmp_path):
    data = (np.arange(64 * 80).reshape(64, 80) % 1000).astype(np.float32) - 300
    dst = tmp_path / "small.ome.zarr"
    io.write_ome_zarr(dst, data, "YX", (0.5, 0.5))
    image = validate(dst)
    assert len(image.attributes.multiscales[0].datasets) == 1
    [(pyramid, meta, _)] = napari_layers(dst)
    assert len(pyramid) == 1 and meta["scale"] == [0.5, 0.5]
    low, high = meta["contrast_limits"]
    assert -300 <= low <= np.percentile(data, 1) and np.percentile(data, 99) <= high <= 699


def test_pyramid_of_a_deep_stack(tmp_path):
    data = np.random.default_rng(2).random((130, 300, 40), dtype=np.float32)
    dst = tmp_path / "deep.ome.zarr"
    io.write_ome_zarr(dst, data, "ZYX", (1.0, 0.25, 0.25), chunks=(64, 64, 64))
    group = zarr.open_group(str(dst), mode="r")
    assert [group[str(k)].shape for k in range(4)] == [(130, 300, 40), (65, 150, 40), (33, 75, 40), (33, 38, 40)]
    np.testing.assert_allclose(group["1"][...], area_mean(data, (2, 2, 1)), rtol=1e-6)
    scales = [d["coordinateTransformations"][0]["scale"] for d in group.attrs["multiscales"][0]["datasets"]]
    np.testing.assert_allclose(scales, [[1, 0.25, 0.25], [2, 0.5, 0.25], [4, 1, 0.25], [4, 2, 0.25]])
    validate(dst)
