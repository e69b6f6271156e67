"""RelativeFlow: a denoising flow learned from noisy references alone (arXiv 2604.15459; the authors'
code github.com/Deliver0/RelativeFlow).

There is no clean image. Each reference x (of whatever quality) is made noisier by the operator D_delta
(noise std times e^delta, src/flowrestore/physics/relative.py); the network N(x', delta) sees the noisier
x' = D_delta(x) and the step delta (its time input) and regresses the relative velocity

    u = clamp((x - D_delta(x)) / (e^delta - 1), -10, 10)          (MSE)

which points from the noisier image back toward the reference, per unit of "quality time". The
paths of different qualities compose (the paper's consistent transport), so references of mixed
quality teach one flow toward quality beyond the best of them. Restoring takes a few deterministic
steps from the input, x <- x + f(delta_k) N(x, delta_k) with delta = 0.2, 0.1, 0.05 by default;
f(delta) = delta as in the authors' code, or e^delta - 1 (the exact step of the path).

Curriculum: delta is drawn uniformly, per sample, from [lo, hi] with lo = start * factor^e and
hi = start / factor^e at "epoch" e; the authors widen once per epoch for 30 epochs from [0.2, 0.2]
to about [0.0094, 4.25]. Here an epoch is `widen_until` / `epochs` of the training steps, so the
range is a pure function of (step, total steps) and a resumed training draws what it would have.

All intensities are in the network units of one global scale, (raw - offset) / (gain * scale): the
operator must count photons, which per-image percentiles would hide (`normalization`).
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError
from ..physics.relative import make_degradation, network_normalization
from .base import Method, register


@register
class RelativeFlow(Method):
    name = "relative_flow"
    stochastic = False
    data = "targets"
    start = "degraded"
    time_input = True

    def __init__(self, options: dict | None = None, source=None):
        super().__init__(options, source)
        self.degradation = checked_degradation(self.options, source)
        self._range = self.delta_range(1, 1)

    def in_channels(self, channels: int = 1) -> int:
        return channels

    def normalization(self):
        return network_normalization(self.options["gain"], self.options["offset"], self.options["scale"])

    def delta_range(self, step: int, total: int) -> tuple[float, float]:
        """[lo, hi] of the training deltas at `step` of `total`: widened by `factor` once per epoch."""
        o = self.options
        epochs = o["epochs"]
        epoch = min(epochs - 1, int(step * epochs / max(1.0, o["widen_until"] * total)))
        return o["delta_start"] * o["factor"] ** epoch, o["delta_start"] / o["factor"] ** epoch

    def schedule(self, step: int, total: int) -> None:
        self._range = self.delta_range(step, total)

    def loss(self, net, target, degraded, generator=None):
        """MSE between N(D_delta(x), delta) and u; target: references (batch, channels, *patch); `degraded` unused."""
        lo, hi = self._range
        delta = lo + (hi - lo) * torch.rand(target.shape[0], generator=generator, device=target.device,
                                            dtype=target.dtype)
        noisier = self.degradation.sample(target, delta, generator)
        d = delta.view(-1, *([1] * (target.ndim - 1)))
        clamp = self.options["clamp"]
        u = torch.clamp((target - noisier) / torch.expm1(d), -clamp, clamp)
        return torch.mean((net(noisier, delta).float() - u.float()) ** 2)

    def velocity(self, net, t, x, degraded):
        """N(x, delta) with t the step delta (batch,): the relative velocity toward better quality."""
        return net(x, t)

    def step_length(self, delta: float) -> float:
        return delta if self.options["step_size"] == "delta" else math.expm1(delta)

    def trajectory(self, field, x0: torch.Tensor) -> list[torch.Tensor]:
        """x after each step (len(steps) states, each shaped like x0), from x0 = the input."""
        x, states = x0, []
        for delta in self.options["steps"]:
            t = torch.full((x.shape[0],), float(delta), device=x.device, dtype=x.dtype)
            x = x + self.step_length(delta) * field(t, x)
            states.append(x)
        return states

    def integrate(self, field, x0, sampling):
        """The method's own grid (`steps`), not the predict section's solver and nfe."""
        return self.trajectory(field, x0)[-1]

    def state_count(self) -> int:
        return len(self.options["steps"])

    def states(self, field, x0, sampling):
        """Every step's state: predictions keep them (channels step_1, ...), so PSNR can be followed per step."""
        return self.trajectory(field, x0)


def checked_degradation(options: dict, source=None):
    """D_delta from the settings; a Gaussian/Rician operator without the noise std is refused by name."""
    if options["operator"] != "thinning" and not options["sigma"] > 0:
        raise InputError(source, f"operator {options['operator']} needs the references' noise std",
                         "set options.sigma (raw units), or use operator: thinning for photon counts")
    return make_degradation(options)
