"""Starting noise as a function of (seed, sample, global voxel position).

A counter-based generator (splitmix64 hashing, Box-Muller) instead of a stateful RNG: the noise
at a voxel does not depend on which block, tile, shard or device asked for it, so the result is
the same for any block size or number of jobs, and a resumed run rewrites the same bytes. It
runs in torch int64 arithmetic, on the device that consumes it.
"""

from __future__ import annotations

import math

import torch

_MASKS = {k: (1 << (64 - k)) - 1 for k in (27, 30, 31, 40)}


def _s64(v: int) -> int:
    """An unsigned 64-bit constant as the signed int64 torch stores."""
    return v - (1 << 64) if v >= 1 << 63 else v


GOLDEN, MUL1, MUL2 = _s64(0x9E3779B97F4A7C15), _s64(0xBF58476D1CE4E5B9), _s64(0x94D049BB133111EB)
AXIS_KEYS = [_s64(0xD6E8FEB86659FD93), _s64(0xA0761D6478BD642F), _s64(0xE7037ED1A0B428DB)]


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    return (z >> k) & _MASKS[k]  # logical shift: torch's >> on int64 is arithmetic


def mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser (int64 arithmetic wraps like uint64)."""
    z = z + GOLDEN
    z = (z ^ _shr(z, 30)) * MUL1
    z = (z ^ _shr(z, 27)) * MUL2
    return z ^ _shr(z, 31)


def _key(seed: int, sample: int, stream: int) -> int:
    z = mix(torch.tensor([seed * 1_000_003 + stream], dtype=torch.int64))
    return int(mix(z ^ sample)[0])


def gaussian(seed: int, sample: int, origin: tuple[int, ...], shape: tuple[int, ...],
             device: torch.device | str = "cpu", step: int | None = None) -> torch.Tensor:
    """N(0, 1) float32 noise for the box `origin + [0, shape)` of global coordinates (may be negative).

    `step` None: the starting noise x0 of `sample`. A step k >= 0: the fresh noise a sampler draws at its
    step k (PnP-Flow's re-noising), from its own pair of streams, so independent of x0 and of other steps.
    """
    out = []
    for stream in (0, 1) if step is None else (2 + 2 * step, 3 + 2 * step):
        h = torch.tensor(_key(seed, sample, stream), dtype=torch.int64, device=device)
        for axis, (o, n) in enumerate(zip(origin, shape)):
            coords = torch.arange(o, o + n, dtype=torch.int64, device=device)
            view = [1] * len(shape)
            view[axis] = n
            # Hash each axis's coordinates once, combine by multiply-xor, and finalise per voxel.
            h = h ^ (mix(coords * AXIS_KEYS[axis]).view(view))
            h = mix(h)
        out.append((_shr(h, 40).to(torch.float32) + 0.5) * 2.0**-24)  # uniform in (0, 1)
    u1, u2 = out
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
