"""Reading acquisitions lazily (TIFF, OME-TIFF, zarr, OME-Zarr) and writing OME-Zarr images.

Every reader returns an `Image` whose `data` is a lazy dask array over the file's own chunks
(TIFF strips/tiles through tifffile's zarr view; uncompressed contiguous TIFFs through a memory
map, region by region), so a volume larger than memory is never loaded whole. A chunk that
cannot be decoded, whichever step reads it, raises an `InputError` naming the file.

Pixel sizes are read in the file's own unit and converted to micrometres (physical.py); a size the
file does not give, or gives implausibly (a 72-dpi print resolution), is recorded as unknown: a
bare scale (1 when absent) with no unit, and a one-line `Image.note` saying why.

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
from dataclasses import dataclass, replace
from pathlib import Path

import dask.array as da
import numpy as np
import tifffile
import zarr

from ..errors import InputError
from . import physical as U
from .ome_zarr import WindowStats, finish_image, omero

SPATIAL = "ZYX"
UNIT = "micrometer"
TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class Image:
    path: str
    data: da.Array  # lazy, axes as in `axes`
    axes: str  # "YX" or "ZYX"
    pixel_size: tuple[float, ...]  # per axis: micrometres where `units` says so, else the file's bare scale
    units: tuple[str | None, ...] = ()  # per axis UNIT, or None where the size is unknown; () means all UNIT
    note: str = ""  # why a pixel size is unknown, one line; "" when every size is known

    def __post_init__(self):
        if not self.units:
            object.__setattr__(self, "units", (UNIT,) * len(self.axes))

    @property
    def pixel_size_um(self) -> tuple[float | None, ...]:
        """Per axis, the pixel size in micrometres, or None where the file gives none."""
        return tuple(p if u else None for p, u in zip(self.pixel_size, self.units))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype


def open_image(path: str | os.PathLike, check_chunks: bool = True) -> Image:
    """Open a 2D (YX) or 3D (ZYX) acquisition lazily; singleton extra axes are dropped.

    Raises InputError naming the file for anything that would be read wrong: an unknown length unit,
    several TIFF series that are not one plane each (see `_tiff_series`), a zarr array with missing
    chunks (`check_chunks`, see `_check_chunks`; a listing of the store, no pixel is read).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found", "check the path and the file-name pattern in the config")
    name = path.name.lower()
    try:
        if name.endswith(TIFF_SUFFIXES):
            image = _open_tiff(path)
        elif path.is_dir() and (name.endswith(".zarr") or _is_zarr(path)):
            image = _open_zarr(path, check_chunks)
        else:
            raise InputError(path, "unsupported file type",
                             "give a .tif/.tiff (OME-TIFF), .zarr or .ome.zarr file")
    except InputError:
        raise
    except U.UnknownUnit as exc:
        raise InputError(path, f"gives its pixel size in an {exc}",
                         "give a length unit such as nm, µm or mm (Fiji: Image > Properties) and save it again") from exc
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


def with_pixel_size(image: Image, pixel_size: float | list[float] | None, source: str = "data.pixel_size") -> Image:
    """`image` with the configured pixel size (µm) on the axes whose size its file does not give.

    `pixel_size`: None (keep unknown), a number (the lateral Y and X size) or one number per axis in
    array order (ZYX or YX). A file's own plausible calibration is kept.
    """
    if pixel_size is None or image.note == "":
        return image
    given = dict(zip(image.axes[-2:], [float(pixel_size)] * 2)) if np.isscalar(pixel_size) else None
    if given is None:
        if len(pixel_size) != len(image.axes):
            raise InputError(image.path, f"has axes {image.axes} but {source} gives {len(pixel_size)} sizes",
                             f"give {source} as one number (lateral) or {len(image.axes)} numbers in {image.axes} order")
        given = dict(zip(image.axes, map(float, pixel_size)))
    sizes = {a: p for a, p, u in zip(image.axes, image.pixel_size, image.units) if u} | {
        a: v for a, u in zip(image.axes, image.units) if not u and (v := given.get(a)) is not None}
    why = {a: f"not given by the file nor {source}" for a in image.axes}
    return replace(image, **dict(zip(("pixel_size", "units", "note"), U.resolve(image.axes, sizes, why))))


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
            chosen = _tiff_series(path, tif)
            axes = tif.series[chosen[0]].axes
            sizes, why = U.tiff_sizes(tif)
            layouts = []
            for index in chosen:
                series = tif.series[index]
                _check_tiff_complete(path, tif, series, handler.messages)
                layouts.append((index, series.dataoffset, tuple(series.shape), series.dtype.newbyteorder(tif.byteorder)))
    finally:
        logging.getLogger("tifffile").removeHandler(handler)
    arrays = [_tiff_array(path, *layout) for layout in layouts]
    if len(arrays) > 1:  # single planes written one after another: one ZYX stack
        data, axes = da.stack([a.reshape(a.shape[-2:]) for a in arrays]), "ZYX"
    else:
        data = arrays[0]
    if data.ndim != len(axes):
        raise InputError(path, "has inconsistent pages", "export the image again as one series")
    data, kept = _squeeze_axes(path, data, axes.replace("S", "C").replace("Q", "Z").replace("I", "Z"))
    return Image(str(path), data, kept, *U.resolve(kept, sizes, why))


def _tiff_series(path: Path, tif: tifffile.TiffFile) -> list[int]:
    """Which series of a TIFF make the image: [0] when there is one, else all of them or a refusal.

    Several series of one plane each and one shape are joined into a ZYX stack: that is what
    `tifffile.imwrite(..., append=True)` and acquisition software that saves plane by plane
    write (tifffile gives each appended plane its own series). Anything else (OME-TIFFs with
    several Images, which are positions or fields of view; series of several planes, or of
    different shapes or types, such as thumbnails) is refused: reading series 0 alone would drop
    the rest without a word, and which of them the user means cannot be told from the file.
    """
    series = tif.series
    if len(series) == 1:
        return [0]
    shapes = {(tuple(s.shape), str(s.dtype)) for s in series}
    planes = all(sum(n > 1 for n in s.shape) <= 2 and s.axes.endswith("YX") and s.shape[-2:] == series[0].shape[-2:]
                 for s in series)
    if not tif.is_ome and len(shapes) == 1 and planes:
        return list(range(len(series)))
    if tif.is_ome:
        kind = f"{len(series)} OME images (positions or fields of view)"
    elif len(shapes) > 1:
        kind = f"{len(series)} image series of different shapes ({', '.join('x'.join(map(str, s)) for s, _ in sorted(shapes))})"
    else:
        kind = f"{len(series)} image series of {'x'.join(map(str, series[0].shape))} each (positions or time points)"
    raise InputError(path, f"has {kind}; a file must hold one 2D or 3D image",
                     "save each position/series as its own file (Fiji/Bio-Formats: open all series, save each; "
                     "or bfconvert -series N) and pair those")


def _tiff_array(path: Path, index: int, offset: int | None, shape: tuple[int, ...], dtype: np.dtype) -> da.Array:
    if offset is not None:
        # Uncompressed and contiguous: mapped region by region. The zarr view would make each strip
        # (often the whole plane) one chunk, so that a small region reads all of it.
        return _lazy(path, _mapped(path, offset, shape, dtype), shape, dtype.newbyteorder("="), default_chunks(shape))
    # tifffile's zarr view reads only the strips/tiles a slice touches
    array = zarr.open_array(tifffile.imread(path, aszarr=True, series=index), mode="r")
    return _lazy(path, array.__getitem__, array.shape, array.dtype, array.chunks)


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


def _open_zarr(path: Path, check_chunks: bool = True) -> Image:
    node = zarr.open(str(path), mode="r")
    attrs = dict(node.attrs)
    attrs = attrs.get("ome", attrs)  # NGFF 0.5 nests metadata under "ome"
    sizes, why, bare = {}, {}, {}
    if isinstance(node, zarr.Array):
        array, axes = node, None
        if "pixel_size" in attrs:  # a bare array: this project's own attribute, in µm
            sizes = dict(zip({2: "YX", 3: "ZYX"}.get(node.ndim, ""), map(float, attrs["pixel_size"])))
    elif "multiscales" in attrs:
        ms = attrs["multiscales"][0]
        level = ms["datasets"][0]
        array = node[level["path"]]
        axes_meta = ms.get("axes", [])
        axes = "".join(a if isinstance(a, str) else a["name"] for a in axes_meta).upper() or None
        try:
            scale = U.ngff_scale(ms, level)
        except ValueError as exc:
            raise InputError(path, str(exc), "write the scale into the multiscales metadata (NGFF 0.4)") from exc
        for i, meta in enumerate(axes_meta):
            name = (meta if isinstance(meta, str) else meta["name"]).upper()
            if name not in SPATIAL:  # channel, or time with its own (time) unit
                continue
            value = scale[i] if scale else 1.0
            unit = None if isinstance(meta, str) else meta.get("unit")
            factor = U.micrometres(unit)
            if factor is None:
                bare[name], why[name] = value, "no unit on the NGFF axis" if unit is None else f"NGFF unit {unit!r}"
            else:
                sizes[name] = value * factor
    else:
        raise InputError(path, "is a zarr group without OME-NGFF multiscales metadata",
                         "give the path of the array itself (e.g. image.zarr/0) or an OME-Zarr image")
    data = _lazy(path, array.__getitem__, array.shape, array.dtype, array.chunks)
    if axes is None:
        axes = {2: "YX", 3: "ZYX"}.get(data.ndim)
        if axes is None:
            raise InputError(path, f"has {data.ndim} dimensions and no axis names",
                             "store a 2D (YX) or 3D (ZYX) array")
    data, kept = _squeeze_axes(path, data, axes)
    if check_chunks:
        _check_chunks(path, array, dict(array.attrs) | attrs)
    return Image(str(path), data, kept, *U.resolve(kept, sizes, why, bare))


def _check_chunks(path: Path, array: zarr.Array, attrs: dict) -> None:
    """Refuse an array with chunks missing from its store, unless its writer declared it sparse.

    zarr reads a missing chunk as the fill value, so a copy or transfer that lost chunk files reads
    as zeros without a word. The count is zarr's own (`nchunks_initialized`: a listing of the stored
    keys, v2 and v3 layouts, shards counted with their chunks), no pixel is read. A writer that
    leaves chunks out on purpose (zarr-python 3 skips chunks equal to the fill value unless
    `write_empty_chunks` is set) says so with the attribute `"sparse": true` on the array or on
    its OME-Zarr group: nothing else in the file tells the two apart.
    """
    if attrs.get("sparse") is True:
        return
    missing = array.nchunks - array.nchunks_initialized
    if missing:
        raise InputError(path, f"has {missing} of its {array.nchunks} chunks missing (zarr would read them as "
                         f"{array.fill_value!r})", "copy the file again completely; if those regions are empty on "
                         'purpose, add "sparse": true to its attributes')


# ---------------------------------------------------------------------------- writing


def default_chunks(shape: tuple[int, ...], plane: int = 256, depth: int = 64) -> tuple[int, ...]:
    """1x256x256-like planes for 2D, 64^3-like cubes for 3D: what later steps read at once."""
    if len(shape) == 2:
        return tuple(min(s, plane) for s in shape)
    return (min(shape[0], depth), *(min(s, depth) for s in shape[1:]))


def ngff_metadata(name: str, axes: str, pixel_size: tuple[float, ...], channels: list[str] | None = None,
                  units: tuple[str | None, ...] | None = None) -> dict:
    """OME-NGFF 0.4 `multiscales` (+ `omero` channel labels) for a single-resolution image.

    `units` per spatial axis (default: all UNIT); an axis whose unit is None gets no "unit": its
    physical size is unknown and `pixel_size` holds the bare scale (Image.units).
    """
    ax = [{"name": a.lower(), "type": "space"} | ({"unit": u} if u else {})
          for a, u in zip(axes, units or (UNIT,) * len(axes))]
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
                    name: str | None = None, units: tuple[str | None, ...] | None = None) -> zarr.Array:
    """Create an empty OME-Zarr image (level "0" only) and return its array for region writes.

    Every chunk is stored, even one equal to the fill value: readers (open_image) take a missing
    chunk for a lost one."""
    full_shape = ((len(channels),) if channels else ()) + tuple(shape)
    chunks = chunks or default_chunks(tuple(shape))
    full_chunks = ((1,) if channels else ()) + tuple(chunks)
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = group.create_array("0", shape=full_shape, chunks=full_chunks, dtype=dtype, fill_value=fill_value,
                               chunk_key_encoding={"name": "v2", "separator": "/"},
                               config={"write_empty_chunks": True})
    group.attrs.update(ngff_metadata(name or Path(path).name, axes, pixel_size, channels, units) | (attrs or {}))
    return array


def write_ome_zarr(path: str | os.PathLike, data: np.ndarray | da.Array, axes: str,
                   pixel_size: tuple[float, ...], chunks: tuple[int, ...] | None = None,
                   attrs: dict | None = None, label: str = "intensity", name: str | None = None,
                   units: tuple[str | None, ...] | None = None) -> None:
    """Write a whole (lazy) array chunk by chunk, with its display window and, when large, a
    pyramid (see ome_zarr); memory stays at a few chunks."""
    data = da.asarray(data)
    chunks = chunks or default_chunks(tuple(data.shape))
    array = create_ome_zarr(path, data.shape, data.dtype, axes, pixel_size, chunks, attrs=attrs, name=name, units=units)
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


def convert(source: str | os.PathLike, destination: str | os.PathLike, chunks: tuple[int, ...] | None = None,
            pixel_size: float | list[float] | None = None) -> None:
    """Store an acquisition as a chunked OME-Zarr image, atomically, keeping dtype and pixel size
    (`pixel_size`: config data.pixel_size, for the axes whose size the file does not give)."""
    from ..atomic import atomic_output

    image = with_pixel_size(open_image(source), pixel_size)
    with atomic_output(destination) as tmp:
        write_ome_zarr(tmp, image.data, image.axes, image.pixel_size, tuple(chunks) if chunks else None,
                       attrs={"flowrestore": {"source": os.path.abspath(source)}}, units=image.units,
                       name=Path(destination).name)  # not the temporary's name: viewers show it
