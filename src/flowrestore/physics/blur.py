"""Blur by a PSF: y = k * x (a true convolution), 2D or 3D, with the boundary handled by padding.

The padding is an index gather (symmetric: scipy.ndimage's 'reflect', d c b a | a b c d; or
circular), so the adjoint is exact: the transposed convolution followed by the scatter-add of
that gather. `GaussianBlur` matches `scipy.ndimage.gaussian_filter(x, sigma, mode='reflect',
truncate=4)` (same kernel radius int(4 sigma + 0.5) and weights) and applies axis-aligned
kernels separably.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import LinearOperator

PADDINGS = ("symmetric", "circular")


def _pad_index(n: int, before: int, after: int, mode: str, device) -> torch.Tensor:
    i = torch.arange(-before, n + after, device=device)
    if mode == "circular":
        return i % n
    i = i % (2 * n)  # half-sample symmetric, period 2n
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _conv(x: torch.Tensor, kernel: torch.Tensor, transpose: bool) -> torch.Tensor:
    """Correlate (or its transpose) each (batch, channel) image of x with `kernel`, no padding."""
    b, c, *spatial = x.shape
    w = kernel.to(x.dtype)[None, None]
    x = x.reshape(b * c, 1, *spatial)
    if len(spatial) == 2:
        out = F.conv_transpose2d(x, w) if transpose else F.conv2d(x, w)
    else:
        out = F.conv_transpose3d(x, w) if transpose else F.conv3d(x, w)
    return out.reshape(b, c, *out.shape[2:])


class Blur(LinearOperator):
    """y = psf * x with `padding` at the borders. psf: tensor of shape (k1, k2[, k3]), odd sizes."""

    def __init__(self, psf: torch.Tensor, padding: str = "symmetric"):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.padding = padding
        self.register_buffer("psf", torch.as_tensor(psf))

    def kernel(self) -> torch.Tensor:
        return self.psf

    def _axes(self, k: torch.Tensor) -> list[tuple[int, int]]:
        return [((n - 1) // 2, n // 2) for n in k.shape]

    def _pad(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        nd = k.ndim
        for axis, (lo, hi) in enumerate(self._axes(k)):
            dim = x.ndim - nd + axis
            x = x.index_select(dim, _pad_index(x.shape[dim], lo, hi, self.padding, x.device))
        return x

    def _unpad(self, z: torch.Tensor, k: torch.Tensor, shape) -> torch.Tensor:
        nd = k.ndim
        for axis, (lo, hi) in reversed(list(enumerate(self._axes(k)))):
            dim = z.ndim - nd + axis
            n = shape[dim]
            out_shape = list(z.shape)
            out_shape[dim] = n
            z = z.new_zeros(out_shape).index_add(dim, _pad_index(n, lo, hi, self.padding, z.device), z)
        return z

    def A(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel()
        # A convolution is a correlation with the flipped kernel.
        return _conv(self._pad(x, k), torch.flip(k, list(range(k.ndim))), transpose=False)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        k = self.kernel()
        return self._unpad(_conv(y, torch.flip(k, list(range(k.ndim))), transpose=True), k, y.shape)


def gaussian_kernel(sigma, dims: int, angle: float = 0.0, truncate: float = 4.0,
                    size: int | None = None, dtype=torch.float64) -> torch.Tensor:
    """A normalised Gaussian PSF of per-axis std `sigma` (pixels, array order), sum 1.

    `angle` (degrees) rotates the last two axes' ellipse; `size` forces an odd edge (else
    2 * int(truncate * max sigma + 0.5) + 1, scipy.ndimage's radius).
    """
    sig = [float(s) for s in (sigma if isinstance(sigma, (list, tuple)) else [sigma] * dims)]
    if len(sig) != dims:
        raise ValueError(f"sigma {sigma} does not have {dims} values")
    radius = (size - 1) // 2 if size else int(truncate * max(sig) + 0.5)
    axes = torch.meshgrid(*[torch.arange(-radius, radius + 1, dtype=dtype)] * dims, indexing="ij")
    y, x = axes[-2], axes[-1]
    a = math.radians(angle)
    u, v = math.cos(a) * y + math.sin(a) * x, -math.sin(a) * y + math.cos(a) * x
    if angle and min(sig[-2:]) == 0:
        raise ValueError("a rotated Gaussian needs both lateral sigmas > 0")

    def term(c, s):  # sigma 0: a delta along that axis
        return (c / s) ** 2 if s > 0 else torch.where(c == 0, 0.0, float("inf")).to(dtype)

    q = term(u, sig[-2]) + term(v, sig[-1])
    if dims == 3:
        q = q + term(axes[0], sig[0])
    k = torch.exp(-0.5 * q)
    return k / k.sum()


def _gaussian_1d(sigma: float, truncate: float, dtype) -> torch.Tensor:
    if sigma == 0:
        return torch.ones(1, dtype=dtype)
    r = int(truncate * sigma + 0.5)
    x = torch.arange(-r, r + 1, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


class GaussianBlur(Blur):
    """Blur by a Gaussian PSF of std `sigma` pixels (one value, or one per axis in array order).

    Axis-aligned kernels (angle 0) are applied one axis at a time: same result as the full kernel
    up to rounding, at a fraction of the cost.
    """

    def __init__(self, sigma, dims: int = 2, angle: float = 0.0, padding: str = "symmetric", truncate: float = 4.0):
        super().__init__(gaussian_kernel(sigma, dims, angle, truncate), padding)
        self.dims, self.angle, self.truncate = dims, angle, truncate
        self.sigma = [float(s) for s in (sigma if isinstance(sigma, (list, tuple)) else [sigma] * dims)]

    def _separable(self):
        return [(axis, _gaussian_1d(s, self.truncate, torch.float64)) for axis, s in enumerate(self.sigma)]

    def _axis_kernel(self, axis: int, k1: torch.Tensor) -> torch.Tensor:
        shape = [1] * self.dims
        shape[axis] = k1.numel()
        return k1.reshape(shape)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        if self.angle:
            return super().A(x)
        for axis, k1 in self._separable():
            if k1.numel() == 1:
                continue
            x = Blur.A(_Fixed(self._axis_kernel(axis, k1), self.padding), x)
        return x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if self.angle:
            return super().A_adjoint(y)
        for axis, k1 in reversed(self._separable()):
            if k1.numel() == 1:
                continue
            y = Blur.A_adjoint(_Fixed(self._axis_kernel(axis, k1), self.padding), y)
        return y


class _Fixed(Blur):
    """A one-off Blur around a given kernel (no buffer registration cost matters here)."""

    def __init__(self, k: torch.Tensor, padding: str):
        nn.Module.__init__(self)
        self.padding = padding
        self.psf = k


class LearnableBlur(Blur):
    """A k^dims kernel learned by gradient descent, normalised to sum 1 on use (DDM4IP's direct kernel).

    Starts as a Gaussian of std `init_sigma` pixels (or a centred delta when init_sigma is 0).
    """

    def __init__(self, size: int, dims: int = 2, init_sigma: float = 1.0, padding: str = "symmetric"):
        if size % 2 == 0:
            raise ValueError(f"kernel size must be odd, got {size}")
        if init_sigma > 0:
            k = gaussian_kernel(init_sigma, dims, size=size, dtype=torch.float32)
        else:
            k = torch.zeros((size,) * dims)
            k[(size // 2,) * dims] = 1.0
        super().__init__(k, padding)
        del self.psf
        self.weight = nn.Parameter(k.clone())

    def kernel(self) -> torch.Tensor:
        return self.weight / self.weight.sum()
