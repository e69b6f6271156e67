"""Operators in sequence: A = A_n ... A_2 A_1, with A^T = A_1^T A_2^T ... A_n^T.

Super-resolution of a blurred acquisition is blur (on the fine grid) then pixel integration.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import LinearOperator


class Compose(LinearOperator):
    """`operators` applied first to last (the first acts on the finest grid)."""

    def __init__(self, operators: list[LinearOperator]):
        super().__init__()
        self.operators = nn.ModuleList(operators)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.operators:
            x = op.A(x)
        return x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        for op in reversed(self.operators):
            y = op.A_adjoint(y)
        return y

    def output_shape(self, shape):
        for op in self.operators:
            shape = op.output_shape(shape)
        return tuple(shape)

    def grid_factor(self, dims: int) -> tuple[int, ...]:
        factors = [op.grid_factor(dims) for op in self.operators]
        return tuple(math.prod(f[axis] for f in factors) for axis in range(dims))
