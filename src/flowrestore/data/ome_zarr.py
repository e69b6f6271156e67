"""What viewers need from an OME-Zarr image: display windows, colours, and a multiscale pyramid.

Both are made piece by piece, so memory stays that of a few chunks (or one prediction block)
whatever the image size:

* `WindowStats` keeps the exact range of a channel and a bounded random subsample of its values
  (`SAMPLE_BUDGET` values whatever the size), fed one block at a time; its robust percentiles
  (`DISPLAY_PERCENTILES`) become `omero.channels[].window.start/end`, which napari-ome-zarr turns
  into contrast limits. A window of 0..1 on data in raw units shows every layer saturated.
* `write_pyramid` adds levels "1", "2", ... to an image of more than `PYRAMID_MIN_VOXELS` voxels,
  one output chunk at a time:
  each level halves every spatial axis that is still larger than its chunk (YX, and Z once the
  stack is deeper than a chunk) until the level fits in one chunk. A level is the area mean of
  2x(2x2) voxels of the level above: scikit-image's `block_reduce` (the function behind
  `downscale_local_mean`) sums each area of one chunk at a time, and the sum is divided by the
  number of voxels the area holds. It works on the numpy chunk this loop already holds (dask's
  `coarsen` would need the level as one graph and drops the odd last row with `trim_excess`), and
  the count makes an edge voxel of an odd-sized axis the mean of the voxels that exist, where
  `downscale_local_mean` divides by the full area and so darkens the edge. Level shapes are ceil(shape / factor); the scale of a level is the pixel size
  times its factor, and its translation (factor - 1) / 2 pixels moves the voxel centres to the
  centres of the areas they average (NGFF 0.4 coordinateTransformations).
"""

from __future__ import annotations

import math
import threading
from itertools import product

import numpy as np
import zarr
from skimage.measure import block_reduce

DISPLAY_PERCENTILES = (0.1, 99.9)  # as the normalisation: clips a few hot pixels, shows the rest
SAMPLE_BUDGET = 1 << 18  # values kept per channel (1 MiB): percentile error ~0.01% of the pixels
PYRAMID_MIN_VOXELS = 1024 * 1024  # below this a viewer reads the whole level at once anyway

GREY = "FFFFFF"
# napari-ome-zarr draws a channel as black -> `color`; magenta matches napari's "magenta" colormap,
# so the uncertainty is told apart from the intensity channels at a glance.
UNCERTAINTY_COLOR = "FF00FF"
UNCERTAINTY = ("std", "std_raw")
SHOWN = ("mmse", "std")  # the other channels load hidden: they would cover the restoration


class WindowStats:
    """Range and robust display limits of one channel, accumulated block by block.

    `add(values, key)` takes any array (NaN/inf ignored); `window()` gives the NGFF `omero` window
    {"min", "max": exact range, "start", "end": DISPLAY_PERCENTILES of a uniform random subsample}.
    `total` (the channel's voxel count) sets the share of each block kept, so the subsample stays
    near `budget` values. Each block's subsample is drawn with a generator seeded by its `key` (its
    position) and the parts are joined in key order, so the window does not depend on the order
    in which threads deliver the blocks; `add` may be called from several threads.
    """

    def __init__(self, total: int, budget: int = SAMPLE_BUDGET, seed: int = 0):
        self.share = min(1.0, budget / max(int(total), 1))
        self.seed = seed
        self.low, self.high = math.inf, -math.inf
        self.parts: dict[tuple, np.ndarray] = {}
        self.lock = threading.Lock()

    def add(self, values, key: tuple[int, ...] = ()) -> None:
        values = np.asarray(values).ravel()
        values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if values.size == 0:
            return
        keep = int(math.ceil(values.size * self.share))
        rng = np.random.default_rng([self.seed, *key])
        pick = values if keep >= values.size else values[rng.integers(0, values.size, keep)]
        low, high = float(values.min()), float(values.max())
        with self.lock:
            self.low, self.high = min(self.low, low), max(self.high, high)
            self.parts[tuple(key)] = pick.astype(np.float64)

    def window(self) -> dict:
        if not self.parts:  # nothing finite: any valid window
            return {"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0}
        start, end = np.percentile(np.concatenate([self.parts[k] for k in sorted(self.parts)]), DISPLAY_PERCENTILES)
        start, end = max(float(start), self.low), min(float(end), self.high)
        if end <= start:  # a constant channel: napari refuses equal contrast limits
            end = start + 1.0
        return {"min": self.low, "max": max(self.high, end), "start": start, "end": end}


def channel_windows(array: zarr.Array, cores) -> list[dict]:
    """The display window of each channel (axis 0) of `array`, read one region of `cores` at a time."""
    # One seed for all: channels holding the same values (std and std_raw without a calibration) get one window.
    stats = [WindowStats(math.prod(array.shape[1:])) for _ in range(array.shape[0])]
    for core in cores:
        key = tuple(c.start for c in core)
        for channel, values in zip(stats, array[(slice(None), *core)]):
            channel.add(values, key)
    return [channel.window() for channel in stats]


def omero(name: str, channels: list[str], windows: list[dict] | None = None) -> dict:
    """The NGFF 0.4 `omero` block: label, colour, visibility and display window per channel."""
    windows = windows or [{"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0}] * len(channels)
    return {"name": name, "version": "0.4", "channels": [
        {"label": c, "active": c in SHOWN or len(channels) == 1, "color": UNCERTAINTY_COLOR if c in UNCERTAINTY else GREY,
         "window": {k: float(w[k]) for k in ("min", "max", "start", "end")}}
        for c, w in zip(channels, windows)]}


def regions(shape: tuple[int, ...], block: tuple[int, ...]):
    """Slices of the blocks that tile `shape`, in C order."""
    starts = product(*(range(0, s, b) for s, b in zip(shape, block)))
    for start in starts:
        yield tuple(slice(a, min(a + b, s)) for a, b, s in zip(start, block, shape))


def pyramid_factors(shape: tuple[int, ...], chunks: tuple[int, ...],
                    min_voxels: int = PYRAMID_MIN_VOXELS) -> list[tuple[int, ...]]:
    """Down-sampling factor per spatial axis of each level, level 0 (all ones) first.

    No pyramid (one level) for images of at most `min_voxels` voxels; else an axis halves at a
    level while it is larger than its chunk, until the level fits in one chunk.
    """
    factors = [(1,) * len(shape)]
    if math.prod(shape) <= min_voxels:
        return factors
    while True:
        level = level_shape(shape, factors[-1])
        step = tuple(2 if s > c else 1 for s, c in zip(level, chunks))
        if step == (1,) * len(shape):
            return factors
        factors.append(tuple(f * s for f, s in zip(factors[-1], step)))


def level_shape(shape: tuple[int, ...], factor: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(-(-s // f) for s, f in zip(shape, factor))


def datasets(pixel_size: tuple[float, ...], factors: list[tuple[int, ...]], channel_axis: bool) -> list[dict]:
    """`multiscales[0].datasets`: path, scale (pixel size x factor) and centring translation per level."""
    out = []
    for level, factor in enumerate(factors):
        scale = [p * f for p, f in zip(pixel_size, factor)]
        shift = [p * (f - 1) / 2 for p, f in zip(pixel_size, factor)]
        if channel_axis:
            scale, shift = [1.0] + scale, [0.0] + shift
        transforms = [{"type": "scale", "scale": [float(s) for s in scale]}]
        if level:
            transforms.append({"type": "translation", "translation": [float(t) for t in shift]})
        out.append({"path": str(level), "coordinateTransformations": transforms})
    return out


def downsample(values: np.ndarray, step: tuple[int, ...]) -> np.ndarray:
    """Area mean over `step` voxels; edges of odd-sized axes average the voxels that exist.

    The sum over each area (scikit-image's `block_reduce`, zero padding) divided by the number of
    voxels the area holds. Integers are rounded back to their type: viewers expect every level in
    one dtype.
    """
    wide = values.dtype.itemsize > 4 or (values.dtype.kind in "iu" and values.dtype.itemsize > 2)
    total = block_reduce(values.astype(np.float64 if wide else np.float32, copy=False), step, np.sum, cval=0)
    count = np.ones((), total.dtype)
    for axis, (n, f) in enumerate(zip(values.shape, step)):
        per_area = np.minimum(f, n - f * np.arange(total.shape[axis])).astype(total.dtype)
        count = count * per_area.reshape([-1 if a == axis else 1 for a in range(values.ndim)])
    mean = total / count
    if values.dtype.kind in "iu":
        info = np.iinfo(values.dtype)
        return np.clip(np.rint(mean), info.min, info.max).astype(values.dtype)
    return mean.astype(values.dtype, copy=False)


def write_pyramid(group: zarr.Group, spatial_shape: tuple[int, ...], chunks: tuple[int, ...],
                  channels: int | None = None, min_voxels: int = PYRAMID_MIN_VOXELS) -> list[tuple[int, ...]]:
    """Write levels "1", "2", ... of `group`, each from the one above; returns the factors.

    `chunks`: spatial chunk shape of level 0 (reused, clipped, by every level); `channels`: the
    size of a leading channel axis (None: no channel axis). One output chunk of one channel is
    made at a time from the (at most 2^ndim) chunks above it, so memory is a few chunks whatever
    the image size (measured: README, "Speed and memory").
    """
    factors = pyramid_factors(spatial_shape, chunks, min_voxels)
    source = group["0"]
    for level in range(1, len(factors)):
        step = tuple(f // g for f, g in zip(factors[level], factors[level - 1]))
        shape = level_shape(spatial_shape, factors[level])
        level_chunks = tuple(min(c, s) for c, s in zip(chunks, shape))
        target = group.create_array(str(level), shape=((channels,) if channels else ()) + shape,
                                    chunks=((1,) if channels else ()) + level_chunks, dtype=source.dtype,
                                    fill_value=source.fill_value, chunk_key_encoding={"name": "v2", "separator": "/"},
                                    overwrite=True)  # a rerun after a crash replaces a half-written level
        for region in regions(shape, level_chunks):
            above = tuple(slice(r.start * s, r.stop * s) for r, s in zip(region, step))
            for c in range(channels or 1):
                index = () if channels is None else (c,)
                target[index + region] = downsample(source[index + above], step)
        source = target
    return factors


def finish_image(group: zarr.Group, pixel_size: tuple[float, ...], labels: list[str],
                 windows: list[dict]) -> list[tuple[int, ...]]:
    """Add the pyramid to a written level "0" and the metadata that describes it and its display.

    `labels`/`windows`: one per channel (one for an image without a channel axis). Returns the
    factors of the levels (see `write_pyramid`).
    """
    array = group["0"]
    spatial = len(pixel_size)
    channel_axis = array.ndim == spatial + 1
    factors = write_pyramid(group, tuple(array.shape[-spatial:]), tuple(array.chunks[-spatial:]),
                            array.shape[0] if channel_axis else None)
    multiscales = group.attrs["multiscales"]
    multiscales[0]["datasets"] = datasets(tuple(pixel_size), factors, channel_axis)
    group.attrs.update({"multiscales": multiscales, "omero": omero(multiscales[0]["name"], labels, windows)})
    return factors
