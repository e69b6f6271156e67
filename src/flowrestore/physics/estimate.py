"""Estimate a camera's Poisson-Gaussian noise (gain, offset, read noise) from the images themselves.

Model (`PoissonGaussian`): raw = offset + gain * Poisson(signal / gain) + N(0, read_noise^2), so the
noise variance is a line in the local mean: var = gain * (mean - offset) + read_noise^2 (Foi et al.
2008, "Practical Poissonian-Gaussian noise modeling and fitting for single-image raw-data").

Noise is measured without a smooth image: the residual of each pixel against the mean of its four
neighbours has variance 1.25 var where the signal is locally linear; structure (edges, spots) is kept
out by using, per bin of local mean, only the flatter half of the pixels (smallest curvature of the
smoothed image) and a robust scale (the median absolute deviation) of their residuals.

One image gives the slope (gain) and the intercept read_noise^2 - gain * offset, not offset and read
noise apart: give the offset (the camera's documented bias), or a dark frame (offset = its mean,
read noise = its std), and the other follows. The read noise is only as good as the image's
darkest regions: in an image without a dark area it is the difference of two large numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MAD_TO_STD = 1.4826  # std / MAD of a Gaussian
NEIGHBOUR_VARIANCE = 1.25  # Var[x - mean of 4 neighbours] / Var[x] for white noise


@dataclass(frozen=True)
class NoiseEstimate:
    gain: float  # raw units per photo-electron
    offset: float  # raw value of zero signal
    read_noise: float  # std of the Gaussian term, raw units


def mean_variance(image: np.ndarray, bins: int = 40, smoothing: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(local mean, noise variance) per bin of local mean, both (bins,), from one 2D or 3D image.

    The local mean is a Gaussian smoothing (`smoothing` pixels) of the last two axes; bins are
    quantiles of it. Per bin, the half of the pixels with the smallest |Laplacian of Gaussian| count. The variance per bin is (1.4826 MAD of the 4-neighbour residual)^2 / 1.25.
    """
    x = np.asarray(image, dtype=np.float64)
    sigma = [0.0] * (x.ndim - 2) + [smoothing, smoothing]
    local = ndimage.gaussian_filter(x, sigma)
    kernel = np.zeros((3, 3))
    kernel[1, 1], kernel[0, 1], kernel[2, 1], kernel[1, 0], kernel[1, 2] = 1, -0.25, -0.25, -0.25, -0.25
    kernel = kernel.reshape((1,) * (x.ndim - 2) + (3, 3))
    residual = ndimage.convolve(x, kernel, mode="reflect")
    structure = np.abs(ndimage.gaussian_laplace(x, sigma))
    inner = (Ellipsis, slice(1, -1), slice(1, -1))  # the border's reflected neighbours are not independent
    local, residual, structure = local[inner].ravel(), residual[inner].ravel(), structure[inner].ravel()
    edges = np.quantile(local, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, local, side="right") - 1, 0, bins - 1)
    means, variances = np.empty(bins), np.empty(bins)
    for b in range(bins):
        inside = which == b
        # Half the pixels of the bin, the flattest (smallest smoothed curvature): away from edges and spots.
        flat = structure[inside] <= np.median(structure[inside])
        r = residual[inside][flat]
        means[b] = local[inside].mean()
        variances[b] = (MAD_TO_STD * np.median(np.abs(r - np.median(r)))) ** 2 / NEIGHBOUR_VARIANCE
    return means, variances


def estimate_poisson_gaussian(images, offset: float | None = None, dark: np.ndarray | None = None,
                              bins: int = 40) -> NoiseEstimate:
    """Fit var = gain * mean + c over the mean-variance points of `images` (one array or a list).

    `dark`: a frame without light; gives offset (its mean) and read noise (its std). Otherwise
    `offset` (raw units) must be given and read_noise = sqrt(c + gain * offset).
    Raises ValueError when neither is given or the fit finds no positive gain.
    """
    if dark is None and offset is None:
        raise ValueError("one image fixes gain and read_noise^2 - gain * offset only: give the camera offset or a dark frame")
    points = [mean_variance(im, bins) for im in (images if isinstance(images, (list, tuple)) else [images])]
    mean = np.concatenate([p[0] for p in points])
    var = np.concatenate([p[1] for p in points])
    # Weighted least squares: the standard error of a variance estimate grows with the variance.
    w = 1.0 / np.maximum(var, 1e-12)
    a = np.vstack([mean, np.ones_like(mean)]).T
    gain, intercept = np.linalg.lstsq(a * w[:, None], var * w, rcond=None)[0]
    if not gain > 0:
        raise ValueError(f"the noise variance does not grow with the mean (slope {gain:.3g}): not Poisson-Gaussian data")
    if dark is not None:
        d = np.asarray(dark, dtype=np.float64)
        return NoiseEstimate(float(gain), float(d.mean()), float(d.std()))
    return NoiseEstimate(float(gain), float(offset), float(np.sqrt(max(intercept + gain * offset, 0.0))))
