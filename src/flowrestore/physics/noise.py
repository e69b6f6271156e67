"""Noise models: how a measurement scatters around its expected value.

Each model samples in torch (`sample`, with an optional `torch.Generator`) and in numpy
(`sample_numpy`, with a `numpy.random.Generator`, which the simulator uses so that the demo data
stay the same bytes), and gives its conditional mean and variance in closed form (`mean`,
`variance`), which the tests check against samples.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class NoiseModel(nn.Module):
    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def sample_numpy(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def mean(self, x):
        return x

    def variance(self, x):
        raise NotImplementedError


class GaussianNoise(NoiseModel):
    """y = x + sigma * n, n ~ N(0, 1). E[y] = x, Var[y] = sigma^2."""

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = float(sigma)

    def sample(self, x, generator=None):
        return x + self.sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)

    def sample_numpy(self, x, rng):
        return x + rng.normal(0.0, self.sigma, np.shape(x)).astype(np.float32)

    def variance(self, x):
        return torch.full_like(torch.as_tensor(x, dtype=torch.float64), self.sigma**2)


class PoissonGaussian(NoiseModel):
    """A camera: y = offset + gain * Poisson(x / gain) + N(0, read_noise^2), x >= 0 the expected signal.

    x, offset and read_noise are in the camera's units (ADU), gain in ADU per photo-electron.
    E[y] = offset + x, Var[y] = gain * x + read_noise^2 (the mean-variance line a
    Poisson-Gaussian fit estimates; Foi et al. 2008).
    """

    def __init__(self, gain: float = 1.0, offset: float = 0.0, read_noise: float = 0.0):
        super().__init__()
        if gain <= 0 or read_noise < 0:
            raise ValueError(f"need gain > 0 and read_noise >= 0, got {gain}, {read_noise}")
        self.gain, self.offset, self.read_noise = float(gain), float(offset), float(read_noise)

    def sample(self, x, generator=None):
        counts = torch.poisson(torch.clamp(x, min=0) / self.gain, generator=generator)
        y = self.offset + self.gain * counts
        if self.read_noise:
            y = y + self.read_noise * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return y

    def sample_numpy(self, x, rng):
        # Operations in this order keep the demo simulator's bytes of before the operators existed.
        y = rng.poisson(np.clip(x, 0, None) / self.gain).astype(np.float32)
        if self.gain != 1:
            y *= np.float32(self.gain)
        if self.offset:
            y += np.float32(self.offset)
        y += rng.normal(0.0, self.read_noise, np.shape(x)).astype(np.float32)
        return y

    def mean(self, x):
        return self.offset + x

    def variance(self, x):
        return self.gain * x + self.read_noise**2


class BinomialThinning(NoiseModel):
    """Keep each counted photon with probability p and rescale: y = Binomial(x, p) / p, x integer counts.

    E[y] = x, Var[y | x] = x (1 - p) / p. On Poisson counts of mean lambda, y has variance lambda / p:
    thinning with p = exp(-2 delta) multiplies the noise std by exactly exp(delta) (RelativeFlow's D_delta).
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 < p <= 1:
            raise ValueError(f"thinning probability must be in (0, 1], got {p}")
        self.p = float(p)

    def sample(self, x, generator=None):
        counts = torch.clamp(torch.round(x), min=0)
        kept = torch.binomial(counts, torch.full_like(counts, self.p), generator=generator)
        return kept / self.p

    def sample_numpy(self, x, rng):
        counts = np.clip(np.rint(x), 0, None).astype(np.int64)
        return (rng.binomial(counts, self.p) / self.p).astype(np.float32)

    def variance(self, x):
        return x * (1 - self.p) / self.p
