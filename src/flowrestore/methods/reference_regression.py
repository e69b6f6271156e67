"""The naive baseline for data without clean targets: the regression U-Net trained on simulated pairs
(D_delta(reference), reference), treating the noisy reference as if it were clean.

It is what users do today. Its target keeps the reference's noise, and that noise is also in its
input, so for inputs of about the reference's quality it learns something close to the identity:
the noise of the input stays in the output (the reference bias RelativeFlow removes). Same operators,
same intensity scale and same network as `relative_flow` (without time input), so the two compare
at equal budget.
"""

from __future__ import annotations

import torch

from ..physics.relative import network_normalization
from .base import register
from .regression import Regression
from .relative_flow import checked_degradation


@register
class ReferenceRegression(Regression):
    name = "reference_regression"
    data = "targets"

    def __init__(self, options: dict | None = None, source=None):
        super().__init__(options, source)
        self.degradation = checked_degradation(self.options, source)

    def normalization(self):
        return network_normalization(self.options["gain"], self.options["offset"], self.options["scale"])

    def loss(self, net, target, degraded, generator=None):
        """MSE of net(D_delta(x)) against x, delta uniform in `deltas` per sample; `degraded` unused."""
        lo, hi = self.options["deltas"]
        delta = lo + (hi - lo) * torch.rand(target.shape[0], generator=generator, device=target.device,
                                            dtype=target.dtype)
        return torch.mean((net(self.degradation.sample(target, delta, generator)).float() - target.float()) ** 2)
