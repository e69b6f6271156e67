"""Reading (TIFF, OME-TIFF, ImageJ, zarr, OME-Zarr), lazy conversion to OME-Zarr, atomic outputs."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from flowrestore.data import io
from flowrestore.atomic import atomic_output, temp_sibling, write_text
from flowrestore.errors import InputError
from flowrestore.data.simulate import write_demo


def input_error(call, *args, path=None):
    """Run `call`, expect an InputError naming `path` and saying how to fix it; return the problem."""
    with pytest.raises(InputError) as info:
        call(*args)
    message = str(info.value)
    if path is not None:
        assert os.fspath(path) in message, message
    assert "Fix:" in message, message
    return info.value.problem  # without the path: tmp_path names contain the test's words


def ramp(shape, dtype=np.uint16):
    return (np.arange(int(np.prod(shape)), dtype=np.uint64) % 60000).astype(dtype).reshape(shape)


def leftovers(folder):
    """Every file or folder below `folder` (hidden temporary siblings included)."""
    return sorted(os.path.relpath(os.path.join(d, n), folder)
                  for d, dirs, files in os.walk(folder) for n in dirs + files)


# ---------------------------------------------------------------------------- TIFF flavours


def test_ome_tiff_2d_axes_pixel_size_and_values(tmp_path):
    data = ramp((48, 80))
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "YX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.3})
    image = io.open_image(path)
    assert image.axes == "YX"
    assert image.shape == (48, 80) and image.dtype == np.uint16
    assert image.pixel_size == pytest.approx((0.3, 0.2))
    assert isinstance(image.data, da.Array)
    np.testing.assert_array_equal(image.data.compute(), data)


def test_ome_tiff_3d_from_simulator(tmp_path):
    write_demo(tmp_path, 1, (6, 32, 40), seed=3, pixel_size=(0.5, 0.11, 0.12))
    image = io.open_image(tmp_path / "demo000_wf.tif")
    assert image.axes == "ZYX"
    assert image.shape == (6, 32, 40)
    assert image.pixel_size == pytest.approx((0.5, 0.11, 0.12))
    assert image.dtype == np.uint16
    with tifffile.TiffFile(tmp_path / "demo000_wf.tif") as tif:
        np.testing.assert_array_equal(image.data.compute(), tif.asarray())


def test_ome_tiff_units_converted_to_micrometre(tmp_path):
    path = tmp_path / "nm.tif"
    tifffile.imwrite(path, ramp((3, 16, 16)), ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 65, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 65,
        "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 0.001, "PhysicalSizeZUnit": "mm"})
    assert io.open_image(path).pixel_size == pytest.approx((1.0, 0.065, 0.065))


def test_imagej_tiff_spacing_and_resolution(tmp_path):
    path = tmp_path / "ij.tif"
    data = ramp((5, 24, 32))
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})
    image = io.open_image(path)
    assert image.axes == "ZYX"
    assert image.pixel_size == pytest.approx((2.0, 0.5, 0.25))
    np.testing.assert_array_equal(image.data.compute(), data)


def test_imagej_tiff_2d_resolution(tmp_path):
    path = tmp_path / "ij2.tif"
    tifffile.imwrite(path, ramp((24, 32)), imagej=True, resolution=(1 / 0.25, 1 / 0.5), metadata={"unit": "um"})
    image = io.open_image(path)
    assert (image.axes, image.pixel_size) == ("YX", pytest.approx((0.5, 0.25)))


def test_resolution_tags_in_centimetres(tmp_path):
    path = tmp_path / "cm.tif"
    tifffile.imwrite(path, ramp((16, 16)), resolution=(1e4 / 0.25, 1e4 / 0.5), resolutionunit="CENTIMETER")
    assert io.open_image(path).pixel_size == pytest.approx((0.5, 0.25))


@pytest.mark.parametrize("kwargs", [{}, {"metadata": None}], ids=["tifffile-default", "no-metadata"])
def test_plain_tiff_pixel_size_one(tmp_path, kwargs):
    path = tmp_path / "plain.tiff"
    tifffile.imwrite(path, ramp((20, 30)).astype(np.float32), **kwargs)
    image = io.open_image(path)
    assert (image.axes, image.shape, image.dtype) == ("YX", (20, 30), np.float32)
    assert image.pixel_size == (1.0, 1.0)


def test_plain_3d_tiff_pages_are_z(tmp_path):
    path = tmp_path / "stack.tif"
    data = ramp((5, 16, 16))
    tifffile.imwrite(path, data, photometric="minisblack")  # tifffile calls the page axis 'Q'
    image = io.open_image(path)
    assert image.axes == "ZYX" and image.pixel_size == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(image.data.compute(), data)


def test_singleton_axes_squeezed(tmp_path):
    path = tmp_path / "tzcyx.ome.tif"
    data = ramp((1, 5, 1, 16, 24))
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "TZCYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.3, "PhysicalSizeZ": 1.5})
    image = io.open_image(path)
    assert image.axes == "ZYX" and image.shape == (5, 16, 24)
    assert image.pixel_size == pytest.approx((1.5, 0.3, 0.2))
    np.testing.assert_array_equal(image.data.compute(), data[0, :, 0])


def test_single_plane_z_dropped(tmp_path):
    path = tmp_path / "z1.tif"
    tifffile.imwrite(path, ramp((1, 16, 24)), ome=True, metadata={"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2})
    image = io.open_image(path)
    assert image.axes == "YX" and image.shape == (16, 24) and image.pixel_size == pytest.approx((0.2, 0.2))


@pytest.mark.parametrize("case,axis", [("two-channels", "C"), ("two-timepoints", "T"), ("rgb", "C")])
def test_real_extra_axis_refused(tmp_path, case, axis):
    path = tmp_path / f"{case}.tif"
    if case == "two-channels":
        tifffile.imwrite(path, ramp((3, 2, 16, 16)), ome=True, metadata={"axes": "ZCYX"})
    elif case == "two-timepoints":
        tifffile.imwrite(path, ramp((2, 3, 16, 16)), ome=True, metadata={"axes": "TZYX"})
    else:
        tifffile.imwrite(path, ramp((16, 16, 3), np.uint8), photometric="rgb")
    assert f"along axis {axis!r}" in input_error(io.open_image, path, path=path)


def test_tiff_reads_lazily_by_tile(tmp_path):
    path = tmp_path / "tiled.tif"
    data = ramp((256, 192))
    tifffile.imwrite(path, data, tile=(64, 64))
    image = io.open_image(path)
    assert image.data.chunksize == (64, 64)  # the file's own tiles, not one block
    np.testing.assert_array_equal(image.data[70:130, 10:150].compute(), data[70:130, 10:150])


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_contiguous_tiff_reads_regions_not_whole_planes(tmp_path, byteorder):
    """One strip for the whole plane (tifffile's default, and many exporters') is mapped region by
    region, so a small region does not read the whole image."""
    path = tmp_path / "strip.tif"
    data = ramp((600, 520))
    tifffile.imwrite(path, data, byteorder=byteorder)
    image = io.open_image(path)
    assert image.data.chunksize == (256, 256) and image.dtype.isnative
    np.testing.assert_array_equal(image.data[300:310, 500:520].compute(), data[300:310, 500:520])


# ---------------------------------------------------------------------------- zarr / OME-Zarr


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_array(tmp_path, zarr_format):
    data = ramp((4, 20, 24))
    path = tmp_path / "stack.zarr"
    array = zarr.open_array(str(path), mode="w", shape=data.shape, dtype=data.dtype, chunks=(2, 10, 12),
                            zarr_format=zarr_format)
    array[:] = data
    array.attrs["pixel_size"] = [0.4, 0.1, 0.1]
    image = io.open_image(path)
    assert image.axes == "ZYX" and image.pixel_size == pytest.approx((0.4, 0.1, 0.1))
    assert image.data.chunksize == (2, 10, 12)
    np.testing.assert_array_equal(image.data.compute(), data)


def test_zarr_array_without_suffix_and_attrs(tmp_path):
    path = tmp_path / "plane"
    zarr.save_array(str(path), ramp((20, 24)))
    image = io.open_image(path)
    assert (image.axes, image.pixel_size) == ("YX", (1.0, 1.0))


@pytest.mark.parametrize("shape,axes,pixel_size", [((30, 40), "YX", (0.2, 0.1)), ((5, 30, 40), "ZYX", (1.0, 0.2, 0.1))])
def test_ome_zarr_roundtrip_and_ome_zarr_py(tmp_path, shape, axes, pixel_size):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    data = ramp(shape)
    path = tmp_path / "img.ome.zarr"
    io.write_ome_zarr(path, data, axes, pixel_size, chunks=tuple(min(s, 16) for s in shape))
    image = io.open_image(path)
    assert image.axes == axes and image.pixel_size == pytest.approx(pixel_size)
    np.testing.assert_array_equal(image.data.compute(), data)

    node = list(Reader(parse_url(str(path)))())[0]
    assert [a["name"] for a in node.metadata["axes"]] == list(axes.lower())
    assert node.metadata["coordinateTransformations"][0] == [{"type": "scale", "scale": list(pixel_size)}]
    np.testing.assert_array_equal(np.asarray(node.data[0]), data)


def test_ome_zarr_with_singleton_channel_and_string_axes(tmp_path):
    """NGFF 0.3 wrote axes as plain strings; a singleton channel axis is dropped."""
    path = tmp_path / "old.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", shape=(1, 20, 24), dtype="uint16")[:] = ramp((1, 20, 24))
    group.attrs["multiscales"] = [{"version": "0.3", "axes": ["c", "y", "x"], "datasets": [{"path": "0"}]}]
    image = io.open_image(path)
    assert image.axes == "YX" and image.shape == (20, 24) and image.pixel_size == (1.0, 1.0)


@pytest.mark.parametrize("shape", [(1, 1, 1, 20, 24), (1, 1, 3, 20, 24), (1, 2, 3, 20, 24)])
def test_ome_zarr_tczyx_singletons_squeezed(tmp_path, shape):
    """bioformats2raw-style 5D images: singleton T, C (and Z) go, a real channel axis is refused."""
    path = tmp_path / "tczyx.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", shape=shape, dtype="uint16")[:] = ramp(shape)
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 2.0, 0.5, 0.25]}]}]}]
    if shape[1] > 1:
        assert "along axis 'C'" in input_error(io.open_image, path, path=path)
        return
    image = io.open_image(path)
    if shape[2] == 1:
        assert (image.axes, image.shape, image.pixel_size) == ("YX", (20, 24), (0.5, 0.25))
    else:
        assert (image.axes, image.shape, image.pixel_size) == ("ZYX", (3, 20, 24), (2.0, 0.5, 0.25))
    np.testing.assert_array_equal(image.data.compute(), ramp(shape).reshape(image.shape))


def test_ome_zarr_0_5_nested_metadata(tmp_path):
    path = tmp_path / "v05.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.create_array("s0", shape=(3, 20, 24), dtype="float32")[:] = 1.5
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": n, "type": "space"} for n in "zyx"],
        "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 0.5, 0.25]}]}]}]}
    image = io.open_image(path)
    assert image.axes == "ZYX" and image.pixel_size == pytest.approx((2.0, 0.5, 0.25))
    assert float(image.data.mean().compute()) == 1.5


def test_zarr_group_without_multiscales_refused(tmp_path):
    path = tmp_path / "group.zarr"
    zarr.open_group(str(path), mode="w").create_array("x", shape=(4, 4), dtype="u2")
    assert "multiscales" in input_error(io.open_image, path, path=path)


def test_zarr_4d_without_axis_names_refused(tmp_path):
    path = tmp_path / "4d.zarr"
    zarr.open_array(str(path), mode="w", shape=(2, 2, 8, 8), dtype="u2")
    assert "4 dimensions" in input_error(io.open_image, path, path=path)


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("dtype,word", [(np.complex64, "complex"), (bool, "boolean")])
@pytest.mark.parametrize("container", ["tif", "zarr"])
def test_non_intensity_dtypes_refused(tmp_path, dtype, word, container):
    data = (ramp((16, 16)) > 100).astype(dtype)
    path = tmp_path / f"img.{container}"
    if container == "tif":
        tifffile.imwrite(path, data)
    else:
        zarr.save_array(str(path), data)
    assert word in input_error(io.open_image, path, path=path)


@pytest.mark.parametrize("layout", ["strip", "tiles", "zlib", "ome-3d"])
@pytest.mark.parametrize("keep", [0.02, 0.5, 0.95])
def test_truncated_tiff_refused(tmp_path, layout, keep):
    """A partly copied file must fail when opened, not mid-job or (worse) read as zeros."""
    path = tmp_path / f"{layout}.tif"
    data = np.random.default_rng(0).integers(0, 4000, (8, 64, 64) if layout == "ome-3d" else (128, 128), dtype=np.uint16)
    kwargs = {"strip": {}, "tiles": {"tile": (32, 32)}, "zlib": {"compression": "zlib"},
              "ome-3d": {"ome": True, "metadata": {"axes": "ZYX"}}}[layout]
    tifffile.imwrite(path, data, **kwargs)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(int(size * keep))
    assert "truncated or corrupt" in input_error(io.open_image, path, path=path)


@pytest.mark.parametrize("content", [b"", b"II*\x00", None], ids=["empty", "header-only", "random"])
def test_garbage_named_tif_refused(tmp_path, content):
    path = tmp_path / "garbage.tif"
    path.write_bytes(np.random.default_rng(1).bytes(4096) if content is None else content)
    input_error(io.open_image, path, path=path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.tif"
    assert "not found" in input_error(io.open_image, path, path=path)


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "img.png"
    path.write_bytes(b"\x89PNG")
    assert "unsupported" in input_error(io.open_image, path, path=path)


# ---------------------------------------------------------------------------- convert


def test_convert_keeps_dtype_values_pixel_size(tmp_path):
    write_demo(tmp_path / "in", 1, (6, 40, 48), seed=1)
    src, dst = tmp_path / "in" / "demo000_confocal.tif", tmp_path / "out" / "x.ome.zarr"
    io.convert(src, dst, chunks=(2, 16, 16))
    out = io.open_image(dst)
    source = io.open_image(src)
    assert out.dtype == source.dtype == np.uint16
    assert out.axes == "ZYX" and out.pixel_size == pytest.approx((0.3, 0.1, 0.1))
    assert out.data.chunksize == (2, 16, 16)
    np.testing.assert_array_equal(out.data.compute(), source.data.compute())
    attrs = io.read_attrs(dst)
    assert attrs["flowrestore"]["source"] == os.path.abspath(src)
    assert json.loads((dst / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    assert os.listdir(tmp_path / "out") == ["x.ome.zarr"]  # no temporary sibling left


def test_convert_replaces_previous_result(tmp_path):
    src = tmp_path / "a.tif"
    dst = tmp_path / "a.ome.zarr"
    tifffile.imwrite(src, ramp((32, 32)))
    io.convert(src, dst)
    (dst / "stale-file").write_text("from an older run")
    tifffile.imwrite(src, ramp((32, 32)) + 1)
    io.convert(src, dst)
    assert not (dst / "stale-file").exists()
    np.testing.assert_array_equal(io.open_image(dst).data.compute(), ramp((32, 32)) + 1)


@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "over-old-result"])
def test_convert_is_atomic(tmp_path, monkeypatch, previous):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, ramp((64, 64)))
    out = tmp_path / "out"
    dst = out / "in.ome.zarr"
    if previous:
        io.convert(src, dst)
    before = leftovers(out) if previous else []
    calls = []

    def store_half_then_fail(source, target, **kwargs):
        calls.append(target)
        target[:32] = np.asarray(source[:32])  # some chunks are on disk already
        raise OSError("No space left on device")

    monkeypatch.setattr(io.da, "store", store_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        io.convert(src, dst, chunks=(16, 16))
    assert calls, "the write was not reached"
    assert leftovers(out) == before  # no half-written destination, no temporary sibling
    if previous:
        np.testing.assert_array_equal(io.open_image(dst).data.compute(), ramp((64, 64)))


def test_convert_refuses_bad_input_before_writing(tmp_path):
    src = tmp_path / "two.tif"
    tifffile.imwrite(src, ramp((2, 16, 16)), ome=True, metadata={"axes": "CYX"})
    input_error(io.convert, src, tmp_path / "out" / "two.ome.zarr", path=src)
    assert not (tmp_path / "out").exists() or leftovers(tmp_path / "out") == []


BIG_SHAPE = (600, 512, 512)  # uint16: 315 MB


def _big_plane(z):
    """Plane z of the big test volume: cheap, deterministic, different in every plane and row."""
    y, x = np.ogrid[: BIG_SHAPE[1], : BIG_SHAPE[2]]
    return ((y * 7919 + x * 31 + z * 104729) % 65521).astype(np.uint16)


@pytest.fixture
def big_paths(tmp_path):
    """Paths for the big test files, removed afterwards (pytest keeps recent tmp dirs)."""
    src, dst = tmp_path / "big.ome.tif", tmp_path / "big.ome.zarr"
    yield src, dst
    src.unlink(missing_ok=True)
    shutil.rmtree(dst, ignore_errors=True)


@pytest.mark.slow
def test_convert_large_tiff_lazily(big_paths):
    """convert must stream a stack larger than its memory budget, not load it whole."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    src, dst = big_paths
    tifffile.imwrite(src, (_big_plane(z) for z in range(BIG_SHAPE[0])), shape=BIG_SHAPE, dtype=np.uint16,
                     rowsperstrip=64, ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeZ": 0.5, "PhysicalSizeY": 0.1, "PhysicalSizeX": 0.1})
    nbytes = src.stat().st_size
    assert nbytes > 300e6

    # Peak RSS of a fresh process, from /proc (ru_maxrss of a child counts the parent's
    # memory at fork time); the import baseline is subtracted so only convert counts.
    child = textwrap.dedent(f"""
        import json, resource
        def hwm():
            try:
                with open("/proc/self/status") as fh:
                    return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM:"))
            except OSError:
                return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        from flowrestore.data.io import convert
        base = hwm()
        convert({str(src)!r}, {str(dst)!r})
        print(json.dumps({{"base": base, "peak": hwm()}}))
    """)
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    mem = json.loads(run.stdout.strip().splitlines()[-1])
    used = mem["peak"] - mem["base"]
    assert used < 0.6 * nbytes, f"convert used {used / 1e6:.0f} MB for a {nbytes / 1e6:.0f} MB file"

    # Every plane equal to the source, read back chunkwise (a 64-plane slab at a time).
    array = zarr.open_group(str(dst), mode="r")["0"]
    assert array.shape == BIG_SHAPE and array.dtype == np.uint16
    assert array.chunks == io.default_chunks(BIG_SHAPE)
    for z0 in range(0, BIG_SHAPE[0], 64):
        slab = array[z0 : z0 + 64]
        for dz, plane in enumerate(slab):
            if not np.array_equal(plane, _big_plane(z0 + dz)):
                pytest.fail(f"plane {z0 + dz} differs")

    node = list(Reader(parse_url(str(dst)))())[0]
    assert [a["name"] for a in node.metadata["axes"]] == ["z", "y", "x"]
    assert node.metadata["coordinateTransformations"][0] == [{"type": "scale", "scale": [0.5, 0.1, 0.1]}]
    assert node.data[0].shape == BIG_SHAPE
    assert int(node.data[0][599, 511, 511].compute()) == int(_big_plane(599)[511, 511])


# ---------------------------------------------------------------------------- atomic outputs


def test_atomic_file_appears_only_on_success(tmp_path):
    path = tmp_path / "sub" / "result.txt"
    with atomic_output(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(".")
        tmp.write_text("done")
        assert not path.exists()
    assert path.read_text() == "done"
    assert leftovers(tmp_path / "sub") == ["result.txt"]


def test_atomic_directory_appears_only_on_success(tmp_path):
    path = tmp_path / "result.zarr"
    with atomic_output(path) as tmp:
        (tmp / "0").mkdir(parents=True)
        (tmp / "0" / "chunk").write_bytes(b"x")
        assert not path.exists()
    assert (path / "0" / "chunk").read_bytes() == b"x"
    assert leftovers(tmp_path) == ["result.zarr", "result.zarr/0", "result.zarr/0/chunk"]


@pytest.mark.parametrize("kind", ["file", "dir"])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_exception_leaves_nothing(tmp_path, kind, error):
    path = tmp_path / "result"
    with pytest.raises(error):
        with atomic_output(path) as tmp:
            if kind == "dir":
                (tmp / "a").mkdir(parents=True)
                (tmp / "a" / "b").write_text("partial")
            else:
                tmp.write_text("partial")
            raise error("interrupted")
    assert leftovers(tmp_path) == []


def test_atomic_write_removes_a_killed_writers_temporary(tmp_path):
    path = tmp_path / "report.html"
    temp_sibling(path).write_text("<html>half")  # what a SIGKILLed writer leaves
    write_text(path, "<html>whole</html>")
    assert leftovers(tmp_path) == ["report.html"]


def test_atomic_exception_keeps_previous_result(tmp_path):
    path = tmp_path / "result.txt"
    write_text(path, "old")
    with pytest.raises(ValueError):
        with atomic_output(path) as tmp:
            tmp.write_text("new, half")
            raise ValueError
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == ["result.txt"]


def test_atomic_replaces_existing_directory_and_file(tmp_path):
    folder = tmp_path / "out.zarr"
    folder.mkdir()
    (folder / "old-chunk").write_text("stale")
    with atomic_output(folder) as tmp:
        tmp.mkdir()
        (tmp / "new-chunk").write_text("fresh")
    assert sorted(os.listdir(folder)) == ["new-chunk"]

    path = tmp_path / "row.tsv"
    write_text(path, "old")
    write_text(path, "new")
    assert path.read_text() == "new"
    assert leftovers(tmp_path) == ["out.zarr", "out.zarr/new-chunk", "row.tsv"]
