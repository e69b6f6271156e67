"""Percentile normalisation, computed per acquisition and stored so predictions map back to raw units.

Predictions are de-normalised with the *input's* percentiles, as CSBDeep does: the prediction of
a new acquisition (no target) still lands in a defined raw scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np

from ..errors import InputError

# Percentiles from a strided subsample: exact enough for 0.1/99.9 and cheap on huge volumes.
MAX_SAMPLES = 4_000_000


@dataclass(frozen=True)
class Normalization:
    low: float
    high: float

    def apply(self, x):
        return (x - self.low) / (self.high - self.low)

    def invert(self, x):
        return x * (self.high - self.low) + self.low

    @property
    def scale(self) -> float:
        return self.high - self.low


def subsample(data: da.Array, max_samples: int = MAX_SAMPLES) -> da.Array:
    """A regular lattice of about `max_samples` voxels (reads every chunk, keeps few of its pixels)."""
    step = max(1, int(np.ceil((data.size / max_samples) ** (1.0 / data.ndim))))
    return data[tuple(slice(None, None, step) for _ in range(data.ndim))]


NOT_FINITE = ("contains NaN or infinite pixels", "replace them (e.g. Fiji: Process > Math > Remove NaNs) or crop them away")


def measure(data: da.Array, low: float, high: float, path=None) -> Normalization:
    """Percentiles of `data`'s subsample, after checking every pixel is finite.

    Both come from one pass: the subsample reads every chunk anyway, so the check costs no extra I/O.
    """
    sample, finite = dask.compute(subsample(data), da.isfinite(data).all())
    if not finite:
        raise InputError(path, *NOT_FINITE)
    return percentiles(sample, low, high, path)


def percentiles(sample: np.ndarray, low: float, high: float, path=None) -> Normalization:
    """Raises an InputError naming `path` (the image sampled) when the image cannot be normalised."""
    sample = np.asarray(sample, dtype=np.float64)
    if not np.isfinite(sample).all():
        raise InputError(path, *NOT_FINITE)
    lo, hi = np.percentile(sample, [low, high])
    if hi <= lo:
        raise InputError(path, f"has no contrast between the {low} and {high} percentiles (constant or nearly so)",
                         "check the export, or lower normalize.low / raise normalize.high")
    return Normalization(float(lo), float(hi))
