"""RelativeFlow's degradation operators D_delta: make an already noisy image noisier by a known amount.

D_delta maps an image whose noise has std s to one of the same expected value whose noise has std
s * e^delta (the "quality time" of RelativeFlow, arXiv 2604.15459, moves back by delta). It must act
on the image's own noise, whatever its level, because the references are of mixed quality.

Every operator works in the network's units, x = (raw - offset) / (gain * scale) (see
`network_normalization`): `scale` photo-electrons (or raw units, for Gaussian data) map to 1, one
global scale for inputs and references alike, so that D_delta can go back to counts exactly.

- `ThinningDegradation`: photon counts (fluorescence, CT). Binomial thinning of the counts with
  p = e^{-2 delta}, rescaled by 1/p, keeps the mean and multiplies the Poisson variance by exactly
  1/p = e^{2 delta}, whatever the (unknown) signal; re-drawing Poisson noise from the noisy image
  would add the reference's noise a second time (std ratio 1.45 already at delta = 0.05). Camera read
  noise (std r counts) is not thinned, so its own Gaussian term r sqrt(e^{2 delta} - 1) is added.
- `GaussianDegradation`: additive Gaussian noise of known std sigma: adds sigma sqrt(e^{2 delta} - 1).
- `RicianDegradation`: magnitude MR images |s + n|, n complex Gaussian of std sigma per part: adds a
  complex Gaussian of std sigma sqrt(e^{2 delta} - 1) to the magnitude and takes the modulus. Because
  the complex noise is circularly symmetric, the result is exactly Rician with std sigma e^{delta}.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.normalize import Normalization


def network_normalization(gain: float, offset: float, scale: float) -> Normalization:
    """Raw units -> network units: x = (raw - offset) / (gain * scale), one scale for every image."""
    return Normalization(float(offset), float(offset) + float(gain) * float(scale))


def _per_sample(delta: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """delta as a tensor broadcasting over x (batch, channels, *spatial): a scalar or one per sample."""
    d = torch.as_tensor(delta, dtype=x.dtype, device=x.device)
    return d.view(-1, *([1] * (x.ndim - 1))) if d.ndim else d


class RelativeDegradation(nn.Module):
    """D_delta on network-unit tensors of shape (batch, channels, *spatial); delta a float or (batch,)."""

    def sample(self, x: torch.Tensor, delta, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def _randn(self, x, generator):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


class ThinningDegradation(RelativeDegradation):
    """Binomial thinning of photon counts (p = e^{-2 delta}, rescaled by 1/p) plus a read-noise term.

    `scale`: photo-electrons per network unit; `read_noise`: the camera's read noise in photo-electrons
    (read noise in ADU / gain). Counts are the network value times `scale`, rounded and clipped at 0;
    the rounding remainder (read noise, the negative part) is kept unchanged, so E[D(x)] = x exactly.
    Var[D(x) | x] = (n (1 - p) / p + r^2 (1/p - 1)) / scale^2 for n counted photons: on Poisson counts of
    mean lambda with read noise r the total variance goes from lambda + r^2 to (lambda + r^2) e^{2 delta}
    (up to the clipping of counts below 0, which only matters where lambda is comparable to r).
    """

    def __init__(self, scale: float, read_noise: float = 0.0):
        super().__init__()
        if scale <= 0 or read_noise < 0:
            raise ValueError(f"need scale > 0 and read_noise >= 0, got {scale}, {read_noise}")
        self.scale, self.read_noise = float(scale), float(read_noise)

    def sample(self, x, delta, generator=None):
        d = _per_sample(delta, x)
        z = x * self.scale
        counts = torch.clamp(torch.round(z), min=0)
        p = torch.exp(-2 * d).expand_as(counts).contiguous()
        kept = torch.binomial(counts, p, generator=generator) / p
        y = kept + (z - counts)
        if self.read_noise:
            y = y + self.read_noise * torch.sqrt(torch.expm1(2 * d)) * self._randn(x, generator)
        return y / self.scale


class GaussianDegradation(RelativeDegradation):
    """x + sigma sqrt(e^{2 delta} - 1) n, n ~ N(0, 1): noise std sigma becomes sigma e^delta (sigma in network units)."""

    def __init__(self, sigma: float):
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"the Gaussian operator needs the references' noise std sigma > 0, got {sigma}")
        self.sigma = float(sigma)

    def sample(self, x, delta, generator=None):
        return x + self.sigma * torch.sqrt(torch.expm1(2 * _per_sample(delta, x))) * self._randn(x, generator)


class RicianDegradation(GaussianDegradation):
    """|x + s (n1 + i n2)| with s = sigma sqrt(e^{2 delta} - 1): Rician of std sigma becomes Rician of std sigma e^delta."""

    def sample(self, x, delta, generator=None):
        s = self.sigma * torch.sqrt(torch.expm1(2 * _per_sample(delta, x)))
        real, imag = self._randn(x, generator), self._randn(x, generator)
        return torch.sqrt((x + s * real) ** 2 + (s * imag) ** 2)


def make_degradation(options: dict) -> RelativeDegradation:
    """D_delta from a method's settings (`operator`, `gain`, `read_noise`, `sigma`, `scale`; raw units)."""
    gain, scale = options["gain"], options["scale"]
    if options["operator"] == "thinning":
        return ThinningDegradation(scale, options["read_noise"] / gain)
    cls = GaussianDegradation if options["operator"] == "gaussian" else RicianDegradation
    return cls(options["sigma"] / (gain * scale))
