"""A flow-matching prior of clean images, sampled by PnP-Flow with a known forward operator (EM Generalist).

Training (targets only): the conditional-OT flow-matching loss of guided_cfm without the conditioning
channel, x_t = (1 - t) x0 + t x1, target velocity x1 - x0 (Lipman et al. 2023), optionally with
minibatch optimal-transport coupling of noise and data (Tong et al. 2024: for equal uniform batches
the OT plan is a permutation, scipy's `linear_sum_assignment` on squared distances).

Sampling (PnP-Flow, Martin et al. 2025, Algorithm 1; the authors' code github.com/annegnx/PnP-Flow,
`pnpflow/methods/pnp_flow.py`, which EM Generalist's flow version follows): N steps on t_k = k / N,
k = 0 ... N - 1, each

    z   = x - gamma_k A^T (A x - y) / |A|^2,   gamma_k = lr (1 - t_k)^alpha     (data-consistency step)
    z~  = t_k z + (1 - t_k) eps_k,             eps_k fresh N(0, I)              (re-noise to level t_k)
    x   = z~ + (1 - t_k) v(t_k, z~)                                             (one-step denoiser)

The authors' super-resolution operator is decimation (|A| = 1); pixel integration by f has
|A|^2 = A A^T = 1 / f^dims, so the gradient is divided by |A|^2 to give `lr` the same meaning (lr = 1
sets each coarse pixel's mean of z to its measurement at t = 0). Their default alpha is 1; EM
Generalist's is 0.3 (its supplementary text, "normally 0.3"). eps_k is keyed to (seed, sample, step,
voxel), so a voxel's chain does not depend on the tiling.

Isotropic 3D (task `isotropic`, EM Generalist's axial restoration): the prior is a 2D network trained on
XY planes of the targets; at step k the block is cut into XY (k mod 3 = 0), XZ (1) or YZ (2) planes,
each denoised as a 2D image, and the data-consistency step of axial integration is taken on the XZ and
YZ steps only, as the authors' code has it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..physics.downsample import _Integrate
from ..physics.tasks import task_operator
from .base import register
from .guided_cfm import GuidedCFM


@register
class FlowPrior(GuidedCFM):
    name = "flow_prior"
    data = "targets"
    start = "noise"
    measurement = True  # integrate reads the input y and draws fresh keyed noise at each step

    def __init__(self, options: dict | None = None, source=None):
        super().__init__(options, source)
        self.source = source
        self._operators: dict[int, torch.nn.Module] = {}
        self.isotropic = self.options["task"] == "isotropic"
        self._plane_axis = 0  # isotropic: the axis (of Z, Y, X) the block is cut across at the current step
        task_operator(self.options, 3 if self.isotropic else 2, source)  # a task without its settings is refused at once

    def in_channels(self, channels: int = 1) -> int:
        return channels

    def normalization(self):
        if self.options["range"] is None:
            return None
        from ..data.normalize import Normalization

        low, high = self.options["range"]
        return Normalization(float(low), float(high))

    def grid_factor(self, dims: int) -> tuple[int, ...]:
        if self.options["task"] == "isotropic":
            return (self.options["factor"],) + (1,) * (dims - 1)
        if self.options["task"] != "super_resolution":
            return (1,) * dims
        return (1,) * (dims - 2) + (self.options["factor"],) * 2

    def net_dims(self, dims: int) -> int:
        if self.isotropic and dims != 3:
            raise InputError(self.source, f"task isotropic restores ZYX stacks, but the training images are {dims}D",
                             "give 3D acquisitions, or choose task super_resolution for Y and X")
        return 2 if self.isotropic else dims

    def patch_shape(self, patch: tuple[int, ...]) -> tuple[int, ...]:
        return (1, *patch[1:]) if self.isotropic else patch  # XY planes of the targets

    def operator(self, dims: int, device, dtype=torch.float32):
        if dims not in self._operators:
            self._operators[dims] = task_operator(self.options, dims, self.source)
        return self._operators[dims].to(device=device, dtype=dtype)

    # ------------------------------------------------------------------ training
    def couple(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """x0 reordered so that (x0[i], x1[i]) is the minibatch OT plan for squared Euclidean cost."""
        from scipy.optimize import linear_sum_assignment

        a, b = x0.flatten(1).double(), x1.flatten(1).double()
        cost = torch.cdist(a, b) ** 2
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        order = np.empty_like(rows)
        order[cols] = rows  # the noise assigned to data sample j
        return x0[torch.from_numpy(order).to(x0.device)]

    def loss(self, net, target, degraded, generator=None):
        """MSE of v(x_t, t) against x1 - x0; target (batch, channels, *patch); `degraded` is not read."""
        if target.ndim - 2 > net.config.dims:  # XY planes (patches one plane deep) for a 2D prior
            target = target.flatten(1, 2)
        x0 = torch.randn(target.shape, generator=generator, device=target.device, dtype=target.dtype)
        if self.options["coupling"] == "ot":
            x0 = self.couple(x0, target)
        t = self.draw_t(target.shape[0], generator, target.device, target.dtype)
        tt = t.view(-1, *([1] * (target.ndim - 1)))
        xt = (1 - tt) * x0 + tt * target
        return torch.mean((net(xt, t).float() - (target - x0).float()) ** 2)

    def velocity(self, net, t, x, degraded):
        if x.ndim - 2 == net.config.dims:
            return net(x, t)
        return _planewise(net, t, x, self._plane_axis)

    # ------------------------------------------------------------------ sampling
    def times(self) -> list[float]:
        n = self.options["steps"]
        return [k / n for k in range(n)]

    def integrate(self, field, x0, sampling, y=None, noise=None):
        """PnP-Flow from x0 (batch, 1, *grid) to the restored x, same shape.

        y: the input on the output grid (batch or 1, 1, *grid), each input pixel repeated f times per
        axis (the engine's layout; its area mean is the measurement); noise(k): N(0, I) shaped like
        x0 for step k. Without them (a caller that knows nothing of measurements) the chain is the
        prior's own, with no data term and torch's global generator.
        """
        dims = x0.ndim - 2
        alpha, lr = self.options["alpha"], self.options["lr"]
        if y is not None:
            op = self.operator(dims, x0.device, x0.dtype)
            grid = self.grid_factor(dims)
            measured = _Integrate(grid).A(y) if max(grid) > 1 else y
            norm2 = 1.0 / float(np.prod(grid))  # |A|^2: a blur of sum 1 keeps it
        x = x0
        for k, t in enumerate(self.times()):
            self._plane_axis = k % 3 if self.isotropic else 0
            if y is not None and not (self.isotropic and self._plane_axis == 0):
                gamma = lr * (1.0 - t) ** alpha
                z = x - (gamma / norm2) * op.A_adjoint(op.A(x) - measured)
            else:
                z = x
            eps = noise(k) if noise is not None else torch.randn_like(x)
            z = t * z + (1.0 - t) * eps
            x = z + (1.0 - t) * field(torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype), z)
        return x


def _planewise(net, t: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """A 2D network on every plane of x (batch, channels, Z, Y, X) across spatial `axis` (0: XY planes,
    1: XZ, 2: YZ); t (batch,) is each plane's time. Same shape as x."""
    b, c = x.shape[:2]
    moved = x.movedim(2 + axis, 1)  # (batch, planes, channels, *plane)
    planes = moved.reshape(b * moved.shape[1], c, *moved.shape[3:])
    v = net(planes.contiguous(memory_format=torch.channels_last), t.repeat_interleave(moved.shape[1]))
    return v.reshape(moved.shape).movedim(1, 2 + axis)
