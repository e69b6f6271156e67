"""Reading acquisitions lazily (TIFF, OME-TIFF, zarr, OME-Zarr) and writing OME-Zarr images.

Every reader returns an `Image` whose `data` is a lazy dask array over the file's own chunks
(TIFF strips/tiles through tifffile's zarr view; uncompressed contiguous TIFFs through a memory
map, region by region), so a volume larger than memory is never loaded whole. A chunk that
cannot be decoded, whichever step reads it, raises an `InputError` naming the file.

Writers follow OME-NGFF 0.4 (zarr format 2, "/" chunk keys): the version that
napari-ome-zarr, Fiji/MoBIE and BigDataViewer all read. The multiscales metadata is a
20-line dict; writing it here is smaller than adapting ome-zarr-py's writer to region-wise,
multi-process writes, and the tests read our output back with ome-zarr-py, ome-zarr-models
and napari-ome-zarr. Display windows and pyramids are written by `ome_zarr`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
import tifffile
import zarr

from ..errors import InputError
from .ome_zarr import WindowStats, finish_image, omero

SPATIAL = "ZYX"
UNIT = "micrometer"
TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class Image:
    path: str
    data: da.Array  # lazy, axes as in `axes`
    axes: str  # "YX" or "ZYX"
    pixel_size: tuple[float, ...]  # per axis, micrometres

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype


def open_image(path: str | os.PathLike) -> Image:
    """Open a 2D (YX) or 3D (ZYX) acquisition lazily; singleton extra axes are dropped."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found", "check the path and the file-name pattern in the config")
    name = path.name.lower()
    try:
        if name.endswith(TIFF_SUFFIXES):
            image = _open_tiff(path)
        elif path.is_dir() and (name.endswith(".zarr") or _is_zarr(path)):
            image = _open_zarr(path)
        else:
            raise InputError(path, "unsupported file type",
                             "give a .tif/.tiff (OME-TIFF), .zarr or .ome.zarr file")
    except InputError:
        raise
    except Exception as exc:  # corrupt files raise anything from struct errors to KeyErrors
        raise InputError(path, f"cannot be read ({type(exc).__name__}: {_first_line(exc)})",
                         "the file is corrupt or truncated; export or copy it again") from exc
    _check_dtype(image)
    return image


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no detail"


def _is_zarr(path: Path) -> bool:
    return any((path / f).exists() for f in (".zgroup", ".zarray", "zarr.json"))


def _check_dtype(image: Image) -> None:
    kind = image.dtype.kind
    if kind not in "uif":
        what = {"b": "boolean (a mask?)", "c": "complex"}.get(kind, str(image.dtype))
        raise InputError(image.path, f"has a {what} pixel type, not an intensity image",
                         "give integer or floating-point intensity images")
    if image.data.ndim not in (2, 3):
        raise InputError(image.path, f"has axes {image.axes!r}; only 2D (YX) or 3D (ZYX) images are supported",
                         "save one channel and one time point per file")


def _squeeze_axes(path: Path, data: da.Array, axes: str) -> tuple[da.Array, str]:
    """Drop singleton non-spatial axes; refuse real channels/time points with a clear message."""
    axes = axes.upper()
    index, kept = [], ""
    for size, ax in zip(data.shape, axes):
        if ax in SPATIAL and not (ax == "Z" and size == 1):
            index.append(slice(None))
            kept += ax
        elif size == 1:
            index.append(0)
        else:
            raise InputError(path, f"has {size} entries along axis {ax!r} (axes {axes!r})",
                             "save one channel and one time point per file (e.g. Fiji: Image > Stacks > Tools)")
    return data[tuple(index)], kept


class _TiffErrors(logging.Handler):
    """Collects the errors tifffile logs (and otherwise skips) while this thread parses a file."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


def _check_tiff_complete(path: Path, tif: tifffile.TiffFile, series, errors: list[str]) -> None:
    """Refuse truncated or damaged TIFFs now rather than failing (or reading zeros) mid-job.

    tifffile logs a broken page chain or an unreadable tag and carries on with what it could
    parse (a truncated stack can open as its first plane only); the pixel data itself is only
    read on access, so strips/tiles that end past the end of the file are checked here.
    """
    size = tif.filehandle.size
    ends = []
    if series.dataoffset is not None:  # one contiguous block (tifffile, ImageJ)
        ends.append(series.dataoffset + series.nbytes)
    else:
        for page in series.pages:
            if page is None:
                errors.append("image planes are missing")
                break
            ends.extend(o + n for o, n in zip(page.dataoffsets, page.databytecounts) if n)
    if ends and max(ends) > size:
        errors.append(f"pixel data ends at byte {max(ends)} but the file has {size} bytes")
    if errors:
        raise InputError(path, f"is truncated or corrupt ({_first_line(Exception(errors[0]))})",
                         "the file is incomplete or damaged; export or copy it again")


def _open_tiff(path: Path) -> Image:
    handler = _TiffErrors()
    logging.getLogger("tifffile").addHandler(handler)
    try:
        with tifffile.TiffFile(path) as tif:
            len(tif.pages)  # walks the whole page chain, so a broken one is logged
            series = tif.series[0]
            axes = series.axes
            sizes = _tiff_pixel_size(tif)
            _check_tiff_complete(path, tif, series, handler.messages)
            offset, shape, dtype = series.dataoffset, tuple(series.shape), series.dtype.newbyteorder(tif.byteorder)
    finally:
        logging.getLogger("tifffile").removeHandler(handler)
    if offset is not None:
        # Uncompressed and contiguous: mapped region by region. The zarr view would make each strip
        # (often the whole plane) one chunk, so that a small region reads all of it.
        data = _lazy(path, _mapped(path, offset, shape, dtype), shape, dtype.newbyteorder("="), default_chunks(shape))
    else:  # tifffile's zarr view reads only the strips/tiles a slice touches
        array = zarr.open_array(tifffile.imread(path, aszarr=True), mode="r")
        data = _lazy(path, array.__getitem__, array.shape, array.dtype, array.chunks)
    if data.ndim != len(axes):
        raise InputError(path, "has inconsistent pages", "export the image again as one series")
    data, kept = _squeeze_axes(path, data, axes.replace("S", "C").replace("Q", "Z").replace("I", "Z"))
    return Image(str(path), data, kept, tuple(sizes.get(ax, 1.0) for ax in kept))


def _mapped(path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype):
    """Region reads of uncompressed contiguous pixels: mapped per read and unmapped after, so only
    the pages a region touches are read and none of them stay resident."""

    def read(key):
        return np.array(np.memmap(path, dtype, "r", offset, shape)[key], dtype=dtype.newbyteorder("="))

    return read


class _ChunkReader:
    """What dask reads chunks through: a chunk that cannot be decoded (a truncated or damaged
    file) is an InputError naming the file, whichever step happens to read it."""

    def __init__(self, path: Path, read, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.read = str(path), read
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)

    def __getitem__(self, key):
        try:
            return np.asarray(self.read(key))
        except MemoryError:
            raise
        except Exception as exc:
            raise InputError(self.path, f"cannot be read ({type(exc).__name__}: {_first_line(exc)})",
                             "the file is corrupt or truncated; export or copy it again") from exc


def _lazy(path: Path, read, shape, dtype, chunks) -> da.Array:
    reader = _ChunkReader(path, read, shape, dtype)
    return da.from_array(reader, chunks=chunks, name=False, asarray=False, fancy=False,
                         meta=np.empty((0,) * reader.ndim, reader.dtype))


def _tiff_pixel_size(tif: tifffile.TiffFile) -> dict[str, float]:
    """Pixel size in micrometres from OME-XML, else ImageJ/resolution tags; missing axes default to 1."""
    sizes: dict[str, float] = {}
    if tif.is_ome and tif.ome_metadata:
        try:
            pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
            pixels = (pixels[0] if isinstance(pixels, list) else pixels)["Pixels"]
            for ax in "XYZ":
                if f"PhysicalSize{ax}" in pixels:
                    unit = pixels.get(f"PhysicalSize{ax}Unit", "µm")
                    sizes[ax] = float(pixels[f"PhysicalSize{ax}"]) * _to_micrometre(unit)
        except (KeyError, TypeError, ValueError):
            pass
    if not sizes:
        page = tif.pages.first
        for ax, tag in (("X", "XResolution"), ("Y", "YResolution")):
            value = page.tags.get(tag)
            if value is not None and value.value[0]:
                num, den = value.value
                pixels_per_unit = num / den
                if pixels_per_unit > 0 and page.tags.get("ResolutionUnit") is not None:
                    unit = page.tags["ResolutionUnit"].value
                    scale = {2: 25400.0, 3: 10000.0}.get(int(unit), 1.0)  # inch, cm -> µm
                    if tif.is_imagej:
                        scale = 1.0  # ImageJ stores pixels per `unit`, usually micron
                    sizes[ax] = scale / pixels_per_unit
        if tif.is_imagej and tif.imagej_metadata and "spacing" in tif.imagej_metadata:
            sizes["Z"] = float(tif.imagej_metadata["spacing"])
    return sizes


def _to_micrometre(unit: str) -> float:
    return {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "m": 1e6, "Å": 1e-4}.get(unit, 1.0)


def _open_zarr(path: Path) -> Image:
    node = zarr.open(str(path), mode="r")
    attrs = dict(node.attrs)
    attrs = attrs.get("ome", attrs)  # NGFF 0.5 nests metadata under "ome"
    if isinstance(node, zarr.Array):
        array, axes, scale = node, None, None
    elif "multiscales" in attrs:
        ms = attrs["multiscales"][0]
        level = ms["datasets"][0]
        array = node[level["path"]]
        axes = "".join(a if isinstance(a, str) else a["name"] for a in ms.get("axes", [])).upper() or None
        scale = next((t["scale"] for t in level.get("coordinateTransformations", []) if t["type"] == "scale"), None)
    else:
        raise InputError(path, "is a zarr group without OME-NGFF multiscales metadata",
                         "give the path of the array itself (e.g. image.zarr/0) or an OME-Zarr image")
    data = _lazy(path, array.__getitem__, array.shape, array.dtype, array.chunks)
    if axes is None:
        axes = {2: "YX", 3: "ZYX"}.get(data.ndim)
        if axes is None:
            raise InputError(path, f"has {data.ndim} dimensions and no axis names",
                             "store a 2D (YX) or 3D (ZYX) array")
    full_scale = dict(zip(axes, scale)) if scale else {}
    if not scale and "pixel_size" in attrs:
        full_scale = dict(zip(axes, attrs["pixel_size"]))
    data, kept = _squeeze_axes(path, data, axes)
    return Image(str(path), data, kept, tuple(float(full_scale.get(ax, 1.0)) for ax in kept))


# ---------------------------------------------------------------------------- writing


def default_chunks(shape: tuple[int, ...], plane: int = 256, depth: int = 64) -> tuple[int, ...]:
    """1x256x256-like planes for 2D, 64^3-like cubes for 3D: what later steps read at once."""
    if len(shape) == 2:
        return tuple(min(s, plane) for s in shape)
    return (min(shape[0], depth), *(min(s, depth) for s in shape[1:]))


def ngff_metadata(name: str, axes: str, pixel_size: tuple[float, ...], channels: list[str] | None = None) -> dict:
    """OME-NGFF 0.4 `multiscales` (+ `omero` channel labels) for a single-resolution image."""
    ax = [{"name": a.lower(), "type": "space", "unit": UNIT} for a in axes]
    scale = list(map(float, pixel_size))
    if channels is not None:
        ax.insert(0, {"name": "c", "type": "channel"})
        scale.insert(0, 1.0)
    meta = {
        "multiscales": [{
            "version": "0.4",
            "name": name,
            "axes": ax,
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
        }]
    }
    if channels is not None:  # placeholder windows until the data are written (ome_zarr.finish_image)
        meta["omero"] = omero(name, channels)
    return meta


def create_ome_zarr(path: str | os.PathLike, shape: tuple[int, ...], dtype, axes: str,
                    pixel_size: tuple[float, ...], chunks: tuple[int, ...] | None = None,
                    channels: list[str] | None = None, fill_value=0, attrs: dict | None = None,
                    name: str | None = None) -> zarr.Array:
    """Create an empty OME-Zarr image (level "0" only) and return its array for region writes."""
    full_shape = ((len(channels),) if channels else ()) + tuple(shape)
    chunks = chunks or default_chunks(tuple(shape))
    full_chunks = ((1,) if channels else ()) + tuple(chunks)
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = group.create_array("0", shape=full_shape, chunks=full_chunks, dtype=dtype, fill_value=fill_value,
                               chunk_key_encoding={"name": "v2", "separator": "/"})
    group.attrs.update(ngff_metadata(name or Path(path).name, axes, pixel_size, channels) | (attrs or {}))
    return array


def write_ome_zarr(path: str | os.PathLike, data: np.ndarray | da.Array, axes: str,
                   pixel_size: tuple[float, ...], chunks: tuple[int, ...] | None = None,
                   attrs: dict | None = None, label: str = "intensity", name: str | None = None) -> None:
    """Write a whole (lazy) array chunk by chunk, with its display window and, when large, a
    pyramid (see ome_zarr); memory stays at a few chunks."""
    data = da.asarray(data)
    chunks = chunks or default_chunks(tuple(data.shape))
    array = create_ome_zarr(path, data.shape, data.dtype, axes, pixel_size, chunks, attrs=attrs, name=name)
    stats = WindowStats(data.size)

    def observe(block, block_info=None):  # the display window, from the chunks as they are stored
        stats.add(block, block_info[0]["chunk-location"])
        return block

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dask warns about irregular source chunks; rechunk handles it
        da.store(data.rechunk(chunks).map_blocks(observe, dtype=data.dtype), array, lock=False, compute=True)
    finish_image(zarr.open_group(str(path), mode="r+"), pixel_size, [label], [stats.window()])


def read_attrs(path: str | os.PathLike) -> dict:
    return json.loads((Path(path) / ".zattrs").read_text())


def convert(source: str | os.PathLike, destination: str | os.PathLike, chunks: tuple[int, ...] | None = None) -> None:
    """Store an acquisition as a chunked OME-Zarr image, atomically, keeping dtype and pixel size."""
    from ..atomic import atomic_output

    image = open_image(source)
    with atomic_output(destination) as tmp:
        write_ome_zarr(tmp, image.data, image.axes, image.pixel_size, tuple(chunks) if chunks else None,
                       attrs={"flowrestore": {"source": os.path.abspath(source)}},
                       name=Path(destination).name)  # not the temporary's name: viewers show it
