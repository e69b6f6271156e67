"""HazeMatching: guided conditional flow matching (Ray, Ashesh, Jug).

x_t = (1 - t) x0 + t x1 with x0 ~ N(0, I); the velocity net sees the degraded image y as an
extra channel and regresses the straight-line velocity x1 - x0 (the conditional OT path of
Lipman et al. 2023 with sigma_min = 0, torchcfm's `ConditionalFlowMatcher(sigma=0)`).
With `prediction: data` the net outputs x1 instead and the velocity is (x1_hat - x_t) / (1 - t),
the same path's velocity given the prediction (x-prediction, Li & He 2025, "Back to Basics").
"""

from __future__ import annotations

import torch

from .base import Method, register


@register
class GuidedCFM(Method):
    name = "guided_cfm"
    # GroupNorm: the MMSE 0.7-1.9 dB closer to the regression than with the channel norm at equal
    # steps (bench/posterior.py), for a 0.5% mean dependence on predict.tile (bench/tiling.py).
    net_norm = "group"

    def draw_t(self, n: int, generator, device, dtype) -> torch.Tensor:
        """Training times, (n,): uniform, or logit-normal t = sigmoid(z), z ~ N(0, 1) (Esser et al. 2024)."""
        if self.options["time_distribution"] == "logit_normal":
            return torch.sigmoid(torch.randn(n, generator=generator, device=device, dtype=dtype))
        return torch.rand(n, generator=generator, device=device, dtype=dtype)

    def loss(self, net, target, degraded, generator=None):
        x0 = torch.randn(target.shape, generator=generator, device=target.device, dtype=target.dtype)
        t = self.draw_t(target.shape[0], generator, target.device, target.dtype)
        tt = t.view(-1, *([1] * (target.ndim - 1)))
        xt = (1 - tt) * x0 + tt * target
        goal = target if self.options["prediction"] == "data" else target - x0
        return torch.mean((net(torch.cat([xt, degraded], dim=1), t).float() - goal.float()) ** 2)

    def velocity(self, net, t, x, degraded):
        out = net(torch.cat([x, degraded], dim=1), t)
        if self.options["prediction"] == "data":
            # The solvers never evaluate at t = 1; the floor only guards a caller that does.
            gap = (1 - t).clamp_min(1e-3).view(-1, *([1] * (x.ndim - 1)))
            return (out - x) / gap
        return out
