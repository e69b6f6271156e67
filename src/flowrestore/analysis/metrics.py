"""Image-quality metrics for restored fluorescence microscopy images.

All functions take float arrays of shape (Y, X) or (Z, Y, X) in the same units.
Intensity metrics (PSNR, SSIM, MS-SSIM) first normalise both images with the
*target's* percentiles, so that values are comparable across images whose raw
intensity ranges differ (the CARE convention).

Conventions:

* A metric that cannot be computed for an input raises :class:`MetricUnavailable`
  (a ``ValueError``) whose message says why; :func:`compute_all` turns it into
  ``None`` plus that reason.
* ``psnr``/``psnr_affine`` of a prediction with zero error is ``inf`` (the exact
  value); :func:`compute_all` reports it as ``None`` with reason
  ``"infinite: prediction identical to target (zero error)"``, so tables never
  contain inf or NaN.
* SSIM uses the Wang et al. (2004) Gaussian window (sigma 1.5, truncated to 11
  taps), so every axis must be at least 11 pixels.
* MicroSSIM and MicroMS3IM (Ashesh et al. 2024, the `microssim` package; MicroMS3IM is
  what the HazeMatching paper reports) normalise by themselves: they take both images in
  raw units.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from scipy.signal.windows import tukey
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = [
    "MetricUnavailable",
    "normalize_percentile",
    "psnr",
    "psnr_affine",
    "ssim",
    "ms_ssim",
    "frc_curve",
    "frc_resolution",
    "micro_ssim",
    "micro_ms3im",
    "compute_all",
]

# Wang et al. 2004 SSIM settings; truncate=3.5 is what skimage uses for an 11-tap window.
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5
_SSIM_WIN = 2 * int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5) + 1  # 11
_K1, _K2 = 0.01, 0.03
# Fraction of each axis tapered by the FRC apodisation window; 0.25 removes the
# edge discontinuity (which would put a bright cross in the spectrum) while keeping
# most of the field of view at full weight.
_TUKEY_ALPHA = 0.25
_FRC_MIN_SIZE = 16
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# torchmetrics' 5-scale MS-SSIM (inside MicroMS3IM) needs edge // 16 > 10 (its kernel of 11).
_MS3IM_MIN = 16 * (_SSIM_WIN - 1) + 16


class MetricUnavailable(ValueError):
    """A metric that cannot be computed for this input; ``str(e)`` is the human reason."""


def _shape_str(shape) -> str:
    return "x".join(str(s) for s in shape)


def _check_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape} vs target {target.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected a 2D (Y,X) or 3D (Z,Y,X) image, got shape {pred.shape}")
    # NaN/inf would silently turn every percentile and mean into NaN.
    if not (np.isfinite(pred).all() and np.isfinite(target).all()):
        raise MetricUnavailable("input contains non-finite values (NaN or inf)")
    return pred, target


def normalize_percentile(x, low=0.1, high=99.9, reference=None) -> np.ndarray:
    """(x - p_low) / (p_high - p_low) with percentiles of `reference` (default x itself), float32.

    A tiny epsilon (1e-20, as in CSBDeep) keeps a constant reference from dividing by
    zero; the metrics below refuse constant targets explicitly instead.
    """
    x = np.asarray(x, dtype=np.float64)
    ref = x if reference is None else np.asarray(reference, dtype=np.float64)
    p_low, p_high = np.percentile(ref, [low, high])
    return ((x - p_low) / (p_high - p_low + 1e-20)).astype(np.float32)


def _normalised_pair(pred, target, low, high) -> tuple[np.ndarray, np.ndarray]:
    pred, target = _check_pair(pred, target)
    p_low, p_high = np.percentile(target, [low, high])
    if not p_high > p_low:
        raise MetricUnavailable(
            f"target has zero intensity range between its {low} and {high} percentiles"
        )
    return (
        normalize_percentile(pred, low, high, reference=target),
        normalize_percentile(target, low, high),
    )


def _psnr01(pred_n, target_n) -> float:
    # A perfect prediction has PSNR = +inf; keep the exact value but without a warning.
    with np.errstate(divide="ignore"):
        return float(
            peak_signal_noise_ratio(
                np.asarray(target_n, np.float64), np.asarray(pred_n, np.float64), data_range=1.0
            )
        )


def psnr(pred, target, low=0.1, high=99.9) -> float:
    """PSNR in dB on the target's percentile-normalised range (data_range=1).

    Both images are normalised with the TARGET's percentiles, so a prediction that is
    off in scale or offset is penalised (see :func:`psnr_affine` for the invariant
    version). Returns ``inf`` for a prediction identical to the target.
    """
    pred_n, target_n = _normalised_pair(pred, target, low, high)
    return _psnr01(pred_n, target_n)


def psnr_affine(pred, target, low=0.1, high=99.9) -> float:
    """CARE-style scale-invariant PSNR (Weigert et al. 2018).

    The target is percentile-normalised; the prediction is replaced by the
    least-squares affine fit ``a * pred + b`` to the normalised target, then PSNR with
    data_range=1. Because ``psnr``'s normalised prediction is one particular affine map
    of ``pred``, ``psnr_affine >= psnr`` always.
    """
    pred_n, target_n = _normalised_pair(pred, target, low, high)
    # Regress on pred_n (itself an affine map of pred) rather than raw pred so that
    # identical images give exactly a=1 and zero error, like psnr. float64 and
    # centred sums keep the closed-form fit accurate.
    p = pred_n.astype(np.float64)
    t = target_n.astype(np.float64)
    pc, tc = p - p.mean(), t - t.mean()
    var = np.dot(pc.ravel(), pc.ravel())
    a = np.dot(pc.ravel(), tc.ravel()) / var if var > 0 else 0.0
    # MSE is shift-invariant, so comparing a*pc with tc is the same as a*p + b with t.
    return _psnr01(a * pc, tc)


def ssim(pred, target, low=0.1, high=99.9) -> float:
    """Mean SSIM (Wang et al. 2004) on target-normalised images, 2D or 3D.

    skimage ``structural_similarity`` with data_range=1, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False. The Gaussian window is 11 taps, so every
    axis (including Z) must be >= 11, else :class:`MetricUnavailable`.
    """
    pred_n, target_n = _normalised_pair(pred, target, low, high)
    if min(pred_n.shape) < _SSIM_WIN:
        raise MetricUnavailable(
            f"image {_shape_str(pred_n.shape)} is smaller than the SSIM window {_SSIM_WIN}"
        )
    return float(
        structural_similarity(
            target_n,
            pred_n,
            data_range=1.0,
            gaussian_weights=True,
            sigma=_SSIM_SIGMA,
            use_sample_covariance=False,
        )
    )


def _ssim_and_cs(x, y) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure term, computed exactly like skimage's SSIM."""

    def blur(a):
        return ndi.gaussian_filter(a, sigma=_SSIM_SIGMA, truncate=_SSIM_TRUNCATE, mode="reflect")

    c1, c2 = _K1**2, _K2**2  # data_range = 1
    ux, uy = blur(x), blur(y)
    vx = blur(x * x) - ux * ux
    vy = blur(y * y) - uy * uy
    vxy = blur(x * y) - ux * uy
    cs = (2 * vxy + c2) / (vx + vy + c2)
    lum = (2 * ux * uy + c1) / (ux * ux + uy * uy + c1)
    # Like skimage, ignore the border where the window reaches into reflected padding.
    crop = (slice(_SSIM_WIN // 2, -(_SSIM_WIN // 2)),) * x.ndim
    return float((lum * cs)[crop].mean(dtype=np.float64)), float(cs[crop].mean(dtype=np.float64))


def _n_scales(shape, max_scales: int) -> int:
    """How many 2x-downsampled scales keep every axis >= the SSIM window."""
    n = 0
    while n < max_scales and min(s // 2**n for s in shape) >= _SSIM_WIN:
        n += 1
    return n


def _mean_pool2(x) -> np.ndarray:
    # Crop odd edges so every axis splits into pairs, then average each 2x..x2 block.
    x = x[tuple(slice(0, s - s % 2) for s in x.shape)]
    new_shape = [d for s in x.shape for d in (s // 2, 2)]
    return x.reshape(new_shape).mean(axis=tuple(range(1, 2 * x.ndim, 2)))


def ms_ssim(pred, target, low=0.1, high=99.9, weights=_MS_SSIM_WEIGHTS) -> float:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003) on target-normalised images.

    Product over scales of the mean contrast-structure term ``cs_j ** w_j``, with the
    full SSIM (luminance x cs) at the coarsest scale, as in the reference
    implementations. Scales are separated by 2x mean pooling along every axis
    (including Z for 3D input). If the image is too small for ``len(weights)`` scales
    (the coarsest must still be >= 11 px per axis), the coarser scales are dropped and
    the remaining weights renormalised to sum to 1; a 64x64 image gets 3 scales.
    Negative terms are clipped to 1e-6 so that fractional powers stay real.
    """
    pred_n, target_n = _normalised_pair(pred, target, low, high)
    weights = np.asarray(weights, dtype=np.float64)
    n = _n_scales(pred_n.shape, len(weights))
    if n == 0:
        raise MetricUnavailable(
            f"image {_shape_str(pred_n.shape)} is smaller than the SSIM window {_SSIM_WIN}"
        )
    weights = weights[:n] / weights[:n].sum()
    x, y = target_n.astype(np.float64), pred_n.astype(np.float64)
    terms = []
    for j in range(n):
        full, cs = _ssim_and_cs(x, y)
        terms.append(full if j == n - 1 else cs)
        if j < n - 1:
            x, y = _mean_pool2(x), _mean_pool2(y)
    terms = np.maximum(np.asarray(terms), 1e-6)
    return float(np.prod(terms**weights))


def frc_curve(a, b, pixel_size=1.0, bin_width=1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fourier ring correlation between two images of the same shape.

    Each image has its mean subtracted and is apodised with a separable Tukey window
    (alpha 0.25) before the FFT, so the image edges do not add a spurious,
    perfectly correlated cross to the spectrum.

    3D (Z,Y,X) input: rings are taken in the (Y,X) plane and their sums are pooled
    over all z-slices, i.e. a lateral FRC. We do not compute a 3D shell correlation
    because the axial sampling of microscopy stacks is generally different from the
    lateral one; ``pixel_size`` is therefore always the in-plane pixel size.

    Rings are ``bin_width`` frequency steps wide, the step being 1 / (field of view of
    the shorter in-plane axis); the DC ring is excluded and rings stop at Nyquist.

    Returns (spatial frequency of each ring centre in 1/unit of pixel_size, FRC value,
    number of Fourier pixels in the ring, summed over z-slices).
    """
    a, b = _check_pair(a, b)
    ny, nx = a.shape[-2:]
    if min(ny, nx) < _FRC_MIN_SIZE:
        raise MetricUnavailable(
            f"image {_shape_str(a.shape)} is smaller than {_FRC_MIN_SIZE} px in Y or X for FRC"
        )
    window = np.outer(tukey(ny, _TUKEY_ALPHA), tukey(nx, _TUKEY_ALPHA))

    def spectrum(img):
        img = img.astype(np.float64)
        img = img - img.mean(axis=(-2, -1), keepdims=True)
        return np.fft.fft2(img * window, axes=(-2, -1))

    fa, fb = spectrum(a), spectrum(b)
    # Ring statistics summed over z-slices (no-op for 2D).
    lead = tuple(range(a.ndim - 2))
    cross = (fa * fb.conj()).real.sum(axis=lead)
    pa = (np.abs(fa) ** 2).sum(axis=lead)
    pb = (np.abs(fb) ** 2).sum(axis=lead)

    # Radius in cycles/pixel, binned in steps of the coarser axis' frequency resolution.
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.fftfreq(nx)[None, :]
    step = bin_width / min(ny, nx)
    ring = np.rint(np.hypot(fy, fx) / step).astype(np.intp).ravel()
    n_rings = min(ny, nx) // (2 * bin_width)  # last ring whose centre is at or below Nyquist
    keep = (ring >= 1) & (ring <= n_rings)
    ring = ring[keep]

    def ring_sum(v):
        return np.bincount(ring, weights=v.ravel()[keep], minlength=n_rings + 1)[1:]

    num, den_a, den_b = ring_sum(cross), ring_sum(pa), ring_sum(pb)
    if not (den_a.sum() > 0 and den_b.sum() > 0):
        raise MetricUnavailable("an image is constant, FRC is undefined")
    # A ring where one image has no power carries no shared signal: report 0, not NaN.
    with np.errstate(invalid="ignore", divide="ignore"):
        frc = num / np.sqrt(den_a * den_b)
    counts = np.bincount(ring, minlength=n_rings + 1)[1:] * int(np.prod(a.shape[:-2]))
    freq = np.arange(1, n_rings + 1) * step / pixel_size
    return freq, np.nan_to_num(frc, nan=0.0), counts


def frc_resolution(a, b, pixel_size=1.0, threshold=1 / 7) -> float:
    """FRC resolution in the units of ``pixel_size`` (e.g. µm); smaller is better.

    Here ``a``/``b`` are the prediction and the target, so the value is the finest
    length scale down to which the prediction agrees with the target -- not the
    resolution of the prediction on its own. The fixed thresholds 1/7 and 0.5 come
    from the two-independent-halves setting and are used here as conventional cut-offs.

    The FRC is smoothed with a 3-ring running mean; the result is 1 / the first
    frequency where it drops below ``threshold``, linearly interpolated between rings.
    Capped at both ends: Nyquist (2 * pixel_size) if it never drops below the
    threshold, and 1 / (first ring frequency) -- about the field of view -- if it is
    already below at the first ring.
    """
    freq, frc, _ = frc_curve(a, b, pixel_size=pixel_size)
    return _resolution_from_curve(freq, frc, pixel_size, threshold)


def _resolution_from_curve(freq, frc, pixel_size, threshold) -> float:
    smooth = ndi.uniform_filter1d(frc, size=3, mode="nearest")
    below = np.flatnonzero(smooth < threshold)
    if below.size == 0:
        return 2.0 * pixel_size
    i = int(below[0])
    if i == 0:
        return float(1.0 / freq[0])
    s0, s1 = smooth[i - 1], smooth[i]
    f = freq[i - 1] + (s0 - threshold) / (s0 - s1) * (freq[i] - freq[i - 1])
    return float(1.0 / f)


def axial_frc_curve(a, b, z_size=1.0) -> tuple[np.ndarray, np.ndarray]:
    """Fourier correlation of two ZYX stacks in planes of constant axial frequency k_z.

    Each stack has its mean along Z subtracted and is apodised along Z with a Tukey window (alpha 0.25)
    before a 1D FFT along Z; then, per k_z, C(k_z) = Re sum_yx A B* / sqrt(sum_yx |A|^2 sum_yx |B|^2), which
    by Parseval over Y and X is the correlation over the (k_z, k_y, k_x) plane. It measures how far
    along Z the two stacks agree, whatever their lateral resolution (an axial analogue of the FRC,
    cf. the sectoral FSC of Koho et al. 2019). Returns (k_z of each plane, k = 1 .. Z // 2, in
    1/unit of `z_size`; C at each). Raises MetricUnavailable for a 2D image or fewer than 8 planes.
    """
    a, b = _check_pair(a, b)
    if a.ndim != 3:
        raise MetricUnavailable("a 2D image has no axial resolution")
    nz = a.shape[0]
    if nz < 8:
        raise MetricUnavailable(f"a stack of {nz} planes is too thin for an axial FRC (at least 8)")
    window = tukey(nz, _TUKEY_ALPHA)[:, None, None]

    def spectrum(img):
        img = img.astype(np.float64)
        return np.fft.rfft((img - img.mean(axis=0, keepdims=True)) * window, axis=0)[1:nz // 2 + 1]

    fa, fb = spectrum(a), spectrum(b)
    num = (fa * fb.conj()).real.sum(axis=(1, 2))
    den = np.sqrt((np.abs(fa) ** 2).sum(axis=(1, 2)) * (np.abs(fb) ** 2).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(num / den, nan=0.0)
    return np.arange(1, nz // 2 + 1) / (nz * z_size), corr


def axial_frc_resolution(a, b, z_size=1.0, threshold=1 / 7) -> float:
    """Axial resolution (units of `z_size`, smaller is finer) down to which stack `a` agrees with `b`:
    1 / the first k_z where `axial_frc_curve`, smoothed as `frc_resolution` smooths, drops below
    `threshold`; capped at Nyquist (2 z_size) and at the stack's depth."""
    freq, corr = axial_frc_curve(a, b, z_size)
    return _resolution_from_curve(freq, corr, z_size, threshold)


def _planes(pred, target):
    """2D images as they are, 3D ones plane by plane: microssim scores 2D images only."""
    return [(pred, target)] if pred.ndim == 2 else list(zip(pred, target))


def micro_ssim(pred, target) -> float:
    """MicroSSIM (Ashesh et al. 2024) of `pred` against `target`, both in raw units, 2D or 3D.

    microssim's `micro_structural_similarity`: each image minus its 3rd percentile
    (background), both divided by the target's maximum after that; then the mean Gaussian
    SSIM (sigma 1.5, 11 taps) of target vs alpha * pred, with the range-invariant factor
    alpha that maximises it, fitted on this pair. A 3D image is fitted as a whole and scored
    plane by plane; the mean of the planes is returned.
    """
    from microssim import micro_structural_similarity

    pred, target = _check_pair(pred, target)
    if min(pred.shape[-2:]) < _SSIM_WIN:
        raise MetricUnavailable(f"image {_shape_str(pred.shape)} is smaller than the SSIM window {_SSIM_WIN}")
    value = micro_structural_similarity(np.asarray(target, np.float64), np.asarray(pred, np.float64))
    return float(np.mean(value))


def micro_ms3im(pred, target) -> float:
    """MicroMS3IM (Ashesh et al. 2024): MicroSSIM's normalisation and fitted alpha, then
    torchmetrics' 5-scale MS-SSIM of target vs alpha * pred; 3D: mean over planes.

    Needs YX edges of at least `_MS3IM_MIN` (176) pixels.
    """
    from microssim import MicroMS3IM

    pred, target = _check_pair(pred, target)
    if min(pred.shape[-2:]) < _MS3IM_MIN:
        raise MetricUnavailable(f"image {_shape_str(pred.shape)} is smaller than the {_MS3IM_MIN} px "
                                "per edge that MicroMS3IM's 5 scales need")
    target, pred = np.asarray(target, np.float64), np.asarray(pred, np.float64)
    metric = MicroMS3IM().fit(target, pred)
    return float(np.mean([float(metric.score(t, p)) for p, t in _planes(pred, target)]))


def compute_all(pred, target, pixel_size=1.0) -> dict:
    """All metrics of this module for one prediction/target pair.

    Returns ``{'psnr', 'psnr_affine', 'ssim', 'ms_ssim', 'micro_ssim', 'micro_ms3im', 'frc_1/7',
    'frc_0.5'}`` ->
    float or ``None``, plus ``'missing'`` -> {name: reason} for every ``None``.
    A metric is ``None`` when it raised :class:`MetricUnavailable` or its value is not
    finite (e.g. PSNR of a perfect prediction), so the result never holds NaN/inf.
    Shape/dimension mismatches still raise ``ValueError``: those are caller bugs.
    """
    curve: list = []

    def frc():  # the FFTs dominate the cost; share one curve between both thresholds
        if not curve:
            freq, values, _ = frc_curve(pred, target, pixel_size=pixel_size)
            curve.extend([freq, values])
        return curve

    metrics = {
        "psnr": lambda: psnr(pred, target),
        "psnr_affine": lambda: psnr_affine(pred, target),
        "ssim": lambda: ssim(pred, target),
        "ms_ssim": lambda: ms_ssim(pred, target),
        "micro_ssim": lambda: micro_ssim(pred, target),
        "micro_ms3im": lambda: micro_ms3im(pred, target),
        "frc_1/7": lambda: _resolution_from_curve(*frc(), pixel_size, 1 / 7),
        "frc_0.5": lambda: _resolution_from_curve(*frc(), pixel_size, 0.5),
    }
    out: dict = {}
    missing: dict[str, str] = {}
    for name, fn in metrics.items():
        try:
            value = fn()
        except MetricUnavailable as e:
            out[name], missing[name] = None, str(e)
            continue
        if math.isfinite(value):
            out[name] = value
        else:
            out[name] = None
            missing[name] = (
                "infinite: prediction identical to target (zero error)"
                if value == math.inf
                else f"value is not finite ({value})"
            )
    out["missing"] = missing
    return out
