"""HazeMatching: guided conditional flow matching (Ray, Ashesh, Jug).

x_t = (1 - t) x0 + t x1 with x0 ~ N(0, I); the velocity net sees the degraded image y as an
extra channel and regresses the straight-line velocity x1 - x0 (the conditional OT path of
Lipman et al. 2023 with sigma_min = 0, torchcfm's `ConditionalFlowMatcher(sigma=0)`).
With `prediction: data` the net outputs x1 instead and the velocity is (x1_hat - x_t) / (1 - t),
the same path's velocity given the prediction (x-prediction, Li & He 2025, "Back to Basics");
`loss` chooses whether the MSE is taken on x1 or on that velocity.
"""

from __future__ import annotations

import torch

from .base import Method, register

V_LOSS_MIN_GAP = 0.05  # Li & He's t_eps: floor of 1 - t in the velocity of an x-prediction's loss


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
        out = net(torch.cat([xt, degraded], dim=1), t).float()
        data, space = self.options["prediction"] == "data", self._loss_space()
        error = out - (target if data else target - x0).float()  # in the space of the output
        if data and space == "velocity":
            # x-prediction, v-loss (Li & He 2025, their code): the velocity through a floored gap,
            # (x1_hat - x1) / max(1 - t, 0.05), so the weight 1 / (1 - t)^2 stays <= 400
            error = error / (1 - tt).clamp_min(V_LOSS_MIN_GAP).float()
        elif not data and space == "data":
            error = error * (1 - tt).float()  # x1_hat = x_t + (1 - t) v
        return torch.mean(error**2)

    def _loss_space(self) -> str:
        loss = self.options["loss"]
        return self.options["prediction"] if loss == "auto" else loss

    def velocity(self, net, t, x, degraded):
        out = net(torch.cat([x, degraded], dim=1), t)
        if self.options["prediction"] == "data":
            # The solvers never evaluate at t = 1; the floor only guards a caller that does.
            gap = (1 - t).clamp_min(1e-3).view(-1, *([1] * (x.ndim - 1)))
            return (out - x) / gap
        return out
