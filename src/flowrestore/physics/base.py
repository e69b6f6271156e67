"""What every operator is: `A(x)`; linear ones add `A_adjoint(y)` (after deepinv's `Physics`)."""

from __future__ import annotations

import torch
from torch import nn


class Operator(nn.Module):
    """A forward model y = A(x) on tensors of shape (batch, channels, *spatial)."""

    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Spatial shape of A(x) for x of spatial shape `shape`."""
        return tuple(shape)


class LinearOperator(Operator):
    """A linear A with its adjoint: <A u, v> = <u, A_adjoint v> for all u, v."""

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grid_factor(self, dims: int) -> tuple[int, ...]:
        """Per spatial axis, how many x voxels one y voxel covers (1: same grid)."""
        return (1,) * dims


def adjointness_error(op: LinearOperator, shape: tuple[int, ...], seed: int = 0) -> float:
    """|<A u, v> - <u, A^T v>| / (|A u| |v|) for random u, v of spatial `shape`, in float64."""
    g = torch.Generator().manual_seed(seed)
    op = op.to(torch.float64)
    with torch.no_grad():
        return _adjointness_error(op, shape, g)


def _adjointness_error(op, shape, g) -> float:
    u = torch.randn((2, 1, *shape), generator=g, dtype=torch.float64)
    au = op.A(u)
    v = torch.randn(au.shape, generator=g, dtype=torch.float64)
    lhs = torch.sum(au * v)
    rhs = torch.sum(u * op.A_adjoint(v))
    return float(abs(lhs - rhs) / (au.norm() * v.norm()))
