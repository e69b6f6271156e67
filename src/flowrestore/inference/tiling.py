"""Where tiles and blocks go, and how overlapping tiles are blended.

Tiles lie on one global lattice that depends only on the volume's shape; a block (the unit of
work, chunk-aligned) computes every tile that touches its core and writes only its core. Each
voxel is therefore always the blend of the same tiles, whatever the block size or the number of
shards: results are invariant to both.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np


def tile_starts(length: int, tile: int, overlap: int, align: int = 1, border: int = 0) -> list[int]:
    """Evenly spread starts covering [-border, length + border) with at least `overlap` between neighbours.

    With `align` > 1 (the tile and `border` multiples of it) every start is a multiple of `align`,
    the overlap may grow by up to `align` - 1, and the last tile may pass the end by up to
    `align` - 1 more: a translation-equivariant network then sees every voxel at the same phase of
    its down-sampling in any tiling. Where tiles pass the volume the engine pads its input.
    """
    length += 2 * border
    if align > 1:
        length = -(-length // align) * align
    if length <= tile:
        return [-border]
    n = math.ceil((length - overlap) / (tile - overlap))
    if align == 1:
        return [round(i * (length - tile) / (n - 1)) - border for i in range(n)]
    units = (length - tile) // align
    return [align * round(i * units / (n - 1)) - border for i in range(n)]


@dataclass(frozen=True)
class Block:
    index: int
    core: tuple[slice, ...]  # the voxels this block writes
    outer: tuple[slice, ...]  # the voxels its tiles read (core plus what the tiles need around it, in the volume)
    tiles: tuple[tuple[int, ...], ...]  # global tile origins


@dataclass(frozen=True)
class Plan:
    shape: tuple[int, ...]  # volume shape
    tile: tuple[int, ...]  # tile shape (may exceed the volume: then the input is padded)
    overlap: tuple[int, ...]
    block: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]  # per axis

    def blocks(self) -> list[Block]:
        ranges = [range(0, s, b) for s, b in zip(self.shape, self.block)]
        out = []
        for index, corner in enumerate(itertools.product(*ranges)):
            core = tuple(slice(c, min(c + b, s)) for c, b, s in zip(corner, self.block, self.shape))
            per_axis = [[t for t in starts if t < sl.stop and t + tl > sl.start]
                        for starts, sl, tl in zip(self.starts, core, self.tile)]
            outer = tuple(slice(max(0, min(ts)), min(max(ts) + tl, s)) for ts, tl, s in zip(per_axis, self.tile, self.shape))
            out.append(Block(index, core, outer, tuple(itertools.product(*per_axis))))
        return out


def size_problem(tile, overlap, factor: int) -> tuple[str, str, str] | None:
    """(setting, problem, fix) for the first tile or overlap the network cannot take, else None.

    `tile` and `overlap` are an int or one per axis; `factor` is the network's down-sampling
    factor 2^(levels-1). A tile that is not a multiple of it fails inside the network (its skip
    connections no longer line up); an overlap above half the tile would leave tiles that add
    nothing. The tile shrunk to a small volume is always rounded up to a multiple (make_plan).
    """
    if tile is None:  # the default tile suits every factor; its overlap is checked by `sizes`
        return None
    tiles = list(tile) if isinstance(tile, (list, tuple)) else [tile]
    if overlap is None:  # the default overlap is checked against the tile by `sizes`
        overlap = 0
    overlaps = list(overlap) if isinstance(overlap, (list, tuple)) else [overlap]
    if len(tiles) > 1 and len(overlaps) > 1 and len(tiles) != len(overlaps):
        return "predict.overlap", f"has {len(overlaps)} values but predict.tile has {len(tiles)}", "give one per axis"
    for t in tiles:
        if t % factor:
            below, above = max(factor, t // factor * factor), -(-t // factor) * factor
            return ("predict.tile", f"{tile} is not a multiple of {factor}, the network's down-sampling factor",
                    f"use a multiple of {factor} (e.g. {below} or {above})")
    n = max(len(tiles), len(overlaps))
    for t, o in zip(tiles * n if len(tiles) == 1 else tiles, overlaps * n if len(overlaps) == 1 else overlaps):
        if 2 * o > t:
            return ("predict.overlap", f"{overlap} is more than half the tile {tile}",
                    f"use at most {t // 2}, or a larger predict.tile")
    return None


def sizes(settings: dict, ndim: int, factor=1) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(tile, overlap, block), one value per axis, from the `predict` settings of a `ndim`-D image.

    The one place a null `tile`, `overlap` or `block` becomes a size: the schema's `by_dims` value for
    the image's dimensionality (a default tile rounded up to a multiple of `factor`, one value or one
    per axis, so it always suits the network). A setting with the wrong number of axes, or a
    default tile that a given overlap does not fit, raises ValueError(problem, fix) naming the setting.
    """
    from ..config import section_schema

    factors = tuple(factor) if isinstance(factor, (list, tuple)) else (factor,) * ndim
    out = {}
    for name in ("tile", "overlap", "block"):
        value = settings.get(name)
        if value is None:
            value = section_schema("predict")["properties"][name]["by_dims"][str(ndim)]
            if name == "tile":
                value = [-(-t // f) * f for t, f in zip(per_axis_values(value, ndim), factors)]
        value = per_axis_values(value, ndim)
        if len(value) != ndim:
            raise ValueError(f"predict.{name} gives {len(value)} values ({list(value)}) for a {ndim}-D image",
                             "give one value, or one per axis (null: the default for the image's dimensionality)")
        out[name] = value
    if any(2 * o > t for o, t in zip(out["overlap"], out["tile"])):  # given values are checked by size_problem
        tile, overlap = (list(out[n]) if settings.get(n) is None else settings[n] for n in ("tile", "overlap"))
        raise ValueError(f"predict.overlap {overlap} is more than half the tile {tile} (null: the default "
                         f"for {ndim}-D images)", "give predict.tile and predict.overlap together, the overlap at most "
                         "half the tile")
    return out["tile"], out["overlap"], out["block"]


def per_axis_values(value, ndim: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),) * ndim


def make_plan(shape: tuple[int, ...], tile: tuple[int, ...], overlap: tuple[int, ...], block: tuple[int, ...],
              chunks: tuple[int, ...], factor=1, align: tuple[int, ...] | None = None, border=0) -> Plan:
    """Tiles are shrunk to the volume and its borders (rounded up to a multiple of `factor`, one value or
    one per axis); blocks to whole chunks; tile starts on multiples of `align` per axis (None: of
    `factor`, the network's down-sampling factor times the output grid's, so that a voxel's result
    does not depend on where its tiles start). The tiles cover `border` voxels (one value or one per
    axis, rounded up to a multiple of `align`) beyond each side of the volume, which the engine fills
    by mirroring: the network then sees the image's edge as it sees its inside, not next to the
    padding of its own convolutions."""
    n = len(shape)
    factors = tuple(factor) if isinstance(factor, (list, tuple)) else (factor,) * n
    align = tuple(align) if align else factors
    borders = tuple(border) if isinstance(border, (list, tuple)) else (border,) * n
    borders = tuple(-(-b // a) * a for b, a in zip(borders, align))
    tile = tuple(min(t, -(-(s + 2 * b) // f) * f) for t, s, b, f in zip(tile, shape, borders, factors))
    overlap = tuple(min(o, t // 2) for o, t in zip(overlap, tile))
    block = tuple(max(c, (b // c) * c) for b, c in zip(block, chunks))
    starts = tuple(tuple(tile_starts(*a)) for a in zip(shape, tile, overlap, align, borders))
    return Plan(tuple(shape), tile, overlap, block, starts)


def window(tile: tuple[int, ...], overlap: tuple[int, ...]) -> np.ndarray:
    """Separable blending weight: 1 inside, a raised-cosine ramp over the overlap, never zero."""
    w = None
    for n, o in zip(tile, overlap):
        ramp = np.ones(n, dtype=np.float32)
        if o > 0:
            r = 0.5 - 0.5 * np.cos(np.pi * (np.arange(o) + 0.5) / o)
            ramp[:o] = r
            ramp[n - o:] = np.minimum(ramp[n - o:], r[::-1])
        w = ramp if w is None else np.multiply.outer(w, ramp)
    return np.ascontiguousarray(w)
