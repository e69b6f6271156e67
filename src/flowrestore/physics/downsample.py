"""Down-sampling by pixel integration: each output voxel is the mean of f voxels per axis.

Area integration is what a camera pixel f times larger records (and, along Z, a slab f planes
thick), and its adjoint is exact: nearest-neighbour replication divided by the voxels averaged.
(The bilinear resize pair some codes use is not an adjoint pair.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import LinearOperator


class _Integrate(LinearOperator):
    def __init__(self, factors: tuple[int, ...]):
        super().__init__()
        if any(int(f) != f or f < 1 for f in factors):
            raise ValueError(f"down-sampling factors must be positive integers, got {factors}")
        self.factors = tuple(int(f) for f in factors)

    def grid_factor(self, dims: int) -> tuple[int, ...]:
        return self.factors

    def output_shape(self, shape):
        if any(n % f for n, f in zip(shape, self.factors)):
            raise ValueError(f"shape {tuple(shape)} is not a multiple of the factors {self.factors}")
        return tuple(n // f for n, f in zip(shape, self.factors))

    def A(self, x: torch.Tensor) -> torch.Tensor:
        self.output_shape(x.shape[2:])
        pool = F.avg_pool2d if len(self.factors) == 2 else F.avg_pool3d
        return pool(x, self.factors, self.factors)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        for axis, f in enumerate(self.factors):
            if f > 1:
                y = y.repeat_interleave(f, dim=2 + axis)
        return y / math.prod(self.factors)


class AreaDownsample(_Integrate):
    """Lateral down-sampling by an integer `factor` (Y and X; Z untouched in 3D)."""

    def __init__(self, factor: int, dims: int = 2):
        super().__init__((1,) * (dims - 2) + (factor, factor))


class AxialDownsample(_Integrate):
    """Axial down-sampling of a ZYX stack by an integer `factor`: slabs of f planes integrated."""

    def __init__(self, factor: int):
        super().__init__((factor, 1, 1))
