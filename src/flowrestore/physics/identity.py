"""The identity: denoising is restoration with A = I."""

from __future__ import annotations

import torch

from .base import LinearOperator


class Identity(LinearOperator):
    def A(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y
