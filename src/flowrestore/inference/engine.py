"""Restore one block: tiles of (samples x positions) batched through the network and blended.

Two ways to stitch overlapping tiles:
- "tile": solve every tile to t=1, then blend the results (HazeMatching);
- "step": blend the velocities of overlapping tiles at every solver step, so neighbouring
  tiles agree while they are being solved (EM Generalist's stitching).
Posterior samples are done `group` at a time and merged into a running mean and variance
(Chan et al.'s parallel Welford update), so memory holds `group` samples of a block, not K.
The engine knows nothing about the method beyond its declarations (`stochastic`, `start`,
`needs_grad`, `measurement`), its `velocity` and its `integrate` (the time grid). A method with
`measurement` (PnP-Flow) also gets, in `integrate`, the input y of what it integrates (the block, or
a batch of tiles) and `noise(step)`: fresh noise keyed to (seed, sample, step, voxel position).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .keyed_noise import gaussian
from .sampling import SamplingConfig
from .tiling import Block, Plan, window


@dataclass
class BlockResult:
    mean: torch.Tensor  # core shape
    var: torch.Tensor | None  # unbiased sample variance; None for deterministic methods
    samples: list[torch.Tensor]  # the first keep_samples samples (core shape)
    prefix_means: dict[int, torch.Tensor]  # n -> mean of the first n samples, n = 1, 2, 4, ... < K
    steps: list[torch.Tensor] = None  # a deterministic few-step method: the states before the last (core shape)


class Restorer:
    def __init__(self, method, net: torch.nn.Module, config: SamplingConfig, device: torch.device):
        self.method, self.net, self.cfg, self.device = method, net, config, device
        if not method.stochastic:
            # A point predictor: one pass, one "sample".
            self.cfg = SamplingConfig(**{**config.__dict__, "samples": 1, "keep_samples": 0, "stitching": "tile"})
        self.autocast = config.amp and device.type == "cuda"
        # A deterministic method may keep each step's state (method.states); a sampling one keeps its end.
        self.state_count = 1 if method.stochastic else method.state_count()
        # channels-last convolutions are ~30% faster on CPU (oneDNN) and suit tensor cores on GPU.
        self.net = net.to(memory_format=_memory_format(net.config.dims))
        self.evaluations = 0  # network evaluations of one tile, for benchmarks
        # Reused across solver steps, sample groups and blocks, so that predict allocates per block
        # what depends on the block and nothing per step (allocator churn: see allocator.py).
        self._layout_key, self._layout = None, None  # the last tile layout: regions, weight, weight sum
        self._buffers: dict[str, torch.Tensor] = {}

    # -------------------------------------------------------------- network on a batch of tiles
    def _velocity(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.evaluations += x.shape[0]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.method.velocity(self.net, t, x, y).float()

    def _solve(self, x0: torch.Tensor, y: torch.Tensor, boxes) -> torch.Tensor:
        """Solve a batch of tiles to t = 1 (or, for a method keeping its steps, the states stacked on the
        channel axis); boxes: per tile (sample, global origin), for keyed noise."""
        field = lambda t, x: self._velocity(t, x, y)  # noqa: E731
        if self.state_count > 1:
            return torch.cat(self.method.states(field, x0, self.cfg), dim=1)
        return self.method.integrate(field, x0, self.cfg, **self._measured(y, boxes, tuple(x0.shape[2:])))

    def _measured(self, y: torch.Tensor, boxes, size: tuple[int, ...]) -> dict:
        """integrate's extra arguments for a method that declares `measurement`: y and noise(step)."""
        if not self.method.measurement:
            return {}
        seed, device = self.cfg.seed, self.device

        def noise(step: int) -> torch.Tensor:
            return torch.stack([gaussian(seed, k, origin, size, device, step=step)[None] for k, origin in boxes])

        return {"y": y, "noise": noise}

    def _start(self, ks, origin, size, y: torch.Tensor) -> torch.Tensor:
        """x at t = 0 for samples `ks`, shape (len(ks), 1, *size): what the method declares."""
        if self.method.start == "noise":
            return torch.stack([gaussian(self.cfg.seed, k, origin, size, self.device)[None] for k in ks])
        if self.method.start == "degraded":
            return y.expand(len(ks), *y.shape[1:]).clone()
        return torch.zeros((len(ks), 1, *size), device=self.device)

    # -------------------------------------------------------------- tiles of a block
    def _buffer(self, name: str, shape: tuple[int, ...], memory_format=torch.contiguous_format) -> torch.Tensor:
        """An uninitialised float32 buffer kept for the next call with the same shape."""
        buf = self._buffers.get(name)
        if buf is None or tuple(buf.shape) != shape:
            # Made as torch.stack(...).contiguous(memory_format) would make it: the same strides, so
            # the network sees the same layout (and gives the same bits) as from a fresh batch.
            buf = torch.empty(shape, device=self.device).contiguous(memory_format=memory_format)
            self._buffers[name] = buf
        return buf

    def _tile_layout(self, shape: tuple[int, ...], tiles: list[tuple[int, ...]], tile: tuple[int, ...],
                     overlap: tuple[int, ...]):
        """The tiles' regions, the blending weight and the weights' sum over `shape`: they depend only on
        the layout, so they are made once per block (not once per solver step and sample group)."""
        key = (shape, tuple(tiles), tuple(tile), tuple(overlap))
        if key != self._layout_key:
            weight = torch.from_numpy(window(tile, overlap)).to(self.device)
            regions = [tuple(slice(o, o + t) for o, t in zip(origin, tile)) for origin in tiles]
            wsum = torch.zeros(shape, device=self.device)
            for r in regions:
                wsum[r] += weight
            self._layout_key, self._layout = key, (regions, weight, wsum)
        return self._layout

    def _blend(self, fn, x: torch.Tensor, y: torch.Tensor, layout, channels: int | None = None) -> torch.Tensor:
        """Apply fn(x_tiles, y_tiles, items) to every (sample, tile) in batches and blend into x's shape
        (with `channels` channels: fn returns that many per tile); items: the batch's (sample index in x,
        tile region) pairs.

        The tile batches and the accumulator are reused from call to call; the returned blend is a
        new tensor, because a solver may keep one velocity while it asks for the next (Heun)."""
        regions, weight, wsum = layout
        acc = self._buffer("acc", (x.shape[0], channels or x.shape[1], *x.shape[2:])).zero_()
        items = [(k, r) for k in range(x.shape[0]) for r in regions]
        batch = min(self.cfg.batch, len(items))
        # the tiles' layout (a 2D network may see planes of 3D tiles: the method reshapes them)
        layout_format = _memory_format(weight.ndim)
        xs = self._buffer("x_tiles", (batch, x.shape[1], *weight.shape), layout_format)
        ys = self._buffer("y_tiles", (batch, y.shape[1], *weight.shape), layout_format)
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            xb, yb = xs[:len(chunk)], ys[:len(chunk)]
            for j, (k, r) in enumerate(chunk):
                xb[j].copy_(x[k][(slice(None), *r)])
                yb[j].copy_(y[0][(slice(None), *r)])
            out = fn(xb, yb, chunk)
            for (k, r), o in zip(chunk, out):
                acc[k][(slice(None), *r)] += o * weight
        return acc / wsum

    def restore(self, y: torch.Tensor, block: Block, plan: Plan) -> BlockResult:
        """y: normalised input over `block.outer` on the output grid, shape (*outer); returns core-sized results."""
        with torch.set_grad_enabled(self.method.needs_grad):
            return self._restore(y, block, plan)

    def _restore(self, y: torch.Tensor, block: Block, plan: Plan) -> BlockResult:
        cfg = self.cfg
        # Tiles may pass the volume (its border, a volume smaller than a tile, the last aligned tile):
        # the input is mirrored to cover them. `origin`: the global position of the padded input.
        origin = tuple(min(s.start, min(t[a] for t in block.tiles)) for a, s in enumerate(block.outer))
        pad = [(s.start - o, max(0, max(t[a] for t in block.tiles) + plan.tile[a] - s.stop))
               for a, (s, o) in enumerate(zip(block.outer, origin))]
        if any(any(p) for p in pad):
            y = torch.from_numpy(_pad(y.cpu().numpy(), pad))
        y = y.to(self.device)[None, None]
        size = tuple(y.shape[2:])
        tiles = [tuple(o - b for o, b in zip(t, origin)) for t in block.tiles]
        layout = self._tile_layout(size, tiles, plan.tile, plan.overlap)
        core = tuple(slice(c.start - o, c.stop - o) for c, o in zip(block.core, origin))
        count, mean, m2, kept, prefixes, steps = 0, None, None, [], {}, []
        for first in range(0, cfg.samples, cfg.group):
            ks = range(first, min(cfg.samples, first + cfg.group))
            x0 = self._start(ks, origin, size, y)
            if cfg.stitching == "tile":
                x1 = self._blend(lambda xb, yb, items: self._solve(xb, yb, [
                    (ks[k], tuple(o + r.start for o, r in zip(origin, region))) for k, region in items]),
                    x0, y, layout, x0.shape[1] * self.state_count)
            else:
                field = lambda t, x: self._blend(lambda xb, yb, _: self._velocity(t[:1].expand(xb.shape[0]), xb, yb),  # noqa: E731
                                                 x, y, layout)
                x1 = (self.method.integrate(field, x0, cfg, **self._measured(y, [(k, origin) for k in ks], size))
                      if self.state_count == 1 else torch.cat(self.method.states(field, x0, cfg), dim=1))
            if self.state_count > 1:  # deterministic: one sample, its earlier states on the channel axis
                steps = [x1.detach()[0, i][core] for i in range(self.state_count - 1)]
                x1 = x1[:, -1:]
            s = x1.detach()[(slice(None), 0, *core)]
            kept.extend(s[: max(0, cfg.keep_samples - len(kept))])
            if cfg.prefix_means and self.method.stochastic:
                total = (mean * count) if mean is not None else torch.zeros_like(s[0])
                for j in range(len(s)):
                    total = total + s[j]
                    n = count + j + 1
                    if n & (n - 1) == 0 and n < cfg.samples:  # a power of two
                        prefixes[n] = total / n
            # Chan's parallel update of the running mean and sum of squared deviations.
            n_b, mean_b = s.shape[0], s.mean(0)
            m2_b = ((s - mean_b) ** 2).sum(0)
            if mean is None:
                count, mean, m2 = n_b, mean_b, m2_b
            else:
                delta = mean_b - mean
                total = count + n_b
                mean = mean + delta * (n_b / total)
                m2 = m2 + m2_b + delta**2 * (count * n_b / total)
                count = total
        var = m2 / (count - 1) if self.method.stochastic and count > 1 else None
        return BlockResult(mean, var, kept, prefixes, steps)


def _memory_format(dims: int):
    return torch.channels_last if dims == 2 else torch.channels_last_3d


def _pad(a: np.ndarray, pad: list[tuple[int, int]]) -> np.ndarray:
    """Mirrored with the edge voxel repeated (numpy's symmetric: on an output grid f times the input's, a
    pad that is a multiple of f stays whole input voxels); edge values where the volume is too thin to mirror."""
    for axis, (p, n) in enumerate(zip(pad, a.shape)):
        if any(p):
            widths = [(0, 0)] * a.ndim
            widths[axis] = p
            a = np.pad(a, widths, mode="symmetric" if max(p) <= n else "edge")
    return a
