"""A CARE-style point predictor: the same U-Net trained with MSE, a fair baseline of equal size.

Written as a one-step flow from x0 = 0 (velocity = prediction), so it runs through the same
predict engine with one function evaluation and no samples.
"""

from __future__ import annotations

import torch

from .base import Method, register


@register
class Regression(Method):
    name = "regression"
    stochastic = False
    start = "zeros"
    time_input = False

    def in_channels(self, channels: int = 1) -> int:
        return channels

    def loss(self, net, target, degraded, generator=None):
        return torch.mean((net(degraded).float() - target.float()) ** 2)

    def velocity(self, net, t, x, degraded):
        return net(degraded)

    def integrate(self, field, x0, sampling):
        """One Euler step of length 1 from zeros: the prediction itself."""
        t = torch.zeros(x0.shape[0], device=x0.device, dtype=x0.dtype)
        return x0 + field(t, x0)
