"""Synthetic widefield/confocal training pairs for fluorescence restoration.

Ground truth is rendered from simple fluorescence-like structures (filaments,
vesicles, nuclei) in 2D ``(Y, X)`` or 3D ``(Z, Y, X)``.  It is then degraded
twice:

* target ("confocal"): truth * in-focus Gaussian PSF, mild Poisson-Gaussian
  noise at a high photon count;
* input ("widefield"): the same in-focus image plus out-of-focus haze (a
  defocused, disk-like PSF applied to the in-plane structures and to extra
  structures that never appear in the target), a constant background, and
  stronger Poisson-Gaussian noise.

Intensities of the truth are in ``[0, 1]``; ``degrade`` returns photon counts.
Everything is driven by a ``numpy.random.Generator`` so a seed fixes a pair.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from dataclasses import dataclass

import numpy as np
import scipy.fft
import tifffile
from scipy import ndimage, special

import torch

from ..atomic import atomic_output
from ..physics import GaussianBlur, PoissonGaussian

__all__ = ["Microscope", "render_truth", "degrade", "make_pair", "write_demo"]

# Axial voxel size / lateral pixel size of the default sampling (0.3 / 0.1 µm).
# Structures are rendered isotropic in micrometres, hence squeezed along Z.
_ANISOTROPY = 3.0

# Expected object counts per 64 x 64 px tile at density 1: a few filaments,
# many vesicles, rare nuclei. In 3D a tile is _DEPTH planes deep, about the
# axial extent of one object, so each plane is about as busy as a 2D image.
_RATES = {"filaments": 0.8, "vesicles": 3.0, "rings": 0.8, "nuclei": 0.12}
_DEPTH = {"filaments": 3, "vesicles": 3, "rings": 3, "nuclei": 10}

# 3D haze: the defocus blur std grows by defocus_sigma every _DZ_REF planes
# (~4 px per 0.3 µm plane, about the geometric defocus of a high-NA objective)
# and the light a plane sends to its neighbours decays as exp(-|dz| / _DZ_DECAY).
# Beyond _STD_CAP * defocus_sigma the light is nearly flat, so the width is
# capped there, which also bounds the FFT padding.
_DZ_REF = 2.0
_DZ_DECAY = 4.0
_DZ_MAX = 12  # three decay lengths; farther planes add < 5 % of the haze
_STD_CAP = 3.0

# A pillbox of radius R softened by a Gaussian of std _SOFT * R has a per-axis
# std of R * sqrt(1/4 + _SOFT**2); used to map a requested haze width to R.
_SOFT = 0.2


@dataclass(frozen=True)
class Microscope:
    """Imaging parameters of the simulated widefield input and confocal target.

    Intensities of the truth are ~1 at their brightest; ``photons`` converts
    that to expected photo-electrons. Noise is Poisson (shot) plus Gaussian
    (read) noise. ``haze_fraction`` is the share of a structure's light that
    lands out of focus: in 2D the haze is ``haze_fraction * defocus(truth +
    hidden layer)``; in 3D every plane spreads ``haze_fraction`` of its light
    over the planes on each side. Either way the haze carries roughly as much
    energy as the in-focus signal at the default 0.6.
    """

    focus_sigma: float = 1.0  # px, in-focus PSF (both modalities)
    defocus_sigma: float = 8.0  # px, widefield out-of-focus haze PSF width
    haze_fraction: float = 0.6  # relative weight of out-of-focus light vs in-focus
    background: float = 0.02  # constant offset (in units of max truth intensity ~1)
    photons: float = 200.0  # expected photons at intensity 1 in the widefield input
    read_noise: float = 2.0  # camera read noise sigma in photons (widefield)
    target_photons: float = 2000.0  # confocal target photons at intensity 1
    target_read_noise: float = 1.0


# --------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------


def _scale(shape: tuple[int, ...], anisotropy: float = _ANISOTROPY) -> np.ndarray:
    """Per-axis voxel size in units of the lateral pixel size."""
    return np.array([anisotropy, 1.0, 1.0][-len(shape) :])


def _splat(shape: tuple[int, ...], points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Accumulate weighted points (N, ndim) onto a grid with linear weights."""
    out = np.zeros(int(np.prod(shape)), dtype=np.float64)
    if len(points) == 0:
        return out.reshape(shape)
    base = np.floor(points).astype(np.int64)
    frac = points - base
    ndim = len(shape)
    for corner in np.ndindex(*(2,) * ndim):
        idx = base + np.array(corner)
        w = weights * np.prod(np.where(corner, frac, 1.0 - frac), axis=1)
        ok = np.all((idx >= 0) & (idx < np.array(shape)), axis=1)
        flat = np.ravel_multi_index(tuple(idx[ok].T), shape)
        out += np.bincount(flat, weights=w[ok], minlength=out.size)
    return out.reshape(shape)


def _voxel_sigma(sigma: float, scale: np.ndarray) -> np.ndarray:
    """Per-axis blur in voxels for a lateral ``sigma`` in px.

    Floored at half a voxel: thinner blobs would change brightness with their
    sub-voxel position after linear splatting.
    """
    return np.maximum(sigma / scale, 0.5)


def _box(shape, centre, half_px, scale):
    """Slices of a box around ``centre`` and its coordinates in lateral px."""
    half = np.ceil(half_px / scale).astype(int)
    c = np.floor(centre).astype(int)
    lo, hi = np.maximum(c - half, 0), np.minimum(c + half + 1, shape)
    if np.any(hi <= lo):
        return None, None
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    axes = [(np.arange(a, b) - x0) * s for a, b, x0, s in zip(lo, hi, centre, scale)]
    return box, np.meshgrid(*axes, indexing="ij", sparse=True)


def _filaments(shape, rng, n, scale) -> np.ndarray:
    """Thin, smoothly bending curves (persistent random walks)."""
    ndim = len(shape)
    step = 0.5  # px along the curve; dense enough for a continuous line
    sigma = 0.6  # px cross-section; filaments are thinner than the PSF
    sig = _voxel_sigma(sigma, scale)
    # Weight per sample so the blurred line peaks at its intensity: mass per
    # unit length times the cross-section's Gaussian normaliser (in voxels).
    area = np.prod(np.sqrt(2 * np.pi) * sig) / (np.sqrt(2 * np.pi) * sigma)
    pts, wts = [], []
    for _ in range(n):
        k = int(rng.uniform(0.4, 1.5) * max(shape[-2:]) / step)
        # Smoothed angular noise gives spline-like bends instead of jitter.
        turn = ndimage.gaussian_filter1d(rng.normal(0, 0.08, k), 8.0)
        theta = rng.uniform(0, 2 * np.pi) + np.cumsum(turn)
        d = [np.sin(theta), np.cos(theta)]
        if ndim == 3:
            tilt = np.clip(rng.normal(0, 0.3) + np.cumsum(rng.normal(0, 0.01, k)), -1, 1)
            d = [np.sin(tilt)] + [c * np.cos(tilt) for c in d]
        path = np.cumsum(step * np.stack(d, axis=1), axis=0) / scale
        start = rng.uniform(0, shape) - path[k // 2]  # midpoint lies in the image
        pts.append(start + path)
        wts.append(np.full(k, rng.uniform(0.35, 1.0) * step * area))
    if not pts:
        return np.zeros(shape)
    grid = _splat(shape, np.concatenate(pts), np.concatenate(wts))
    return ndimage.gaussian_filter(grid, sig)


def _vesicles(shape, rng, n_spots, n_rings, scale) -> np.ndarray:
    """Bright diffraction-sized spots plus a few hollow rings/shells."""
    ndim = len(shape)
    out = np.zeros(shape)
    # Two spot sizes share one blur each, so the cost does not grow with n.
    for sigma, frac in ((0.8, 0.6), (1.5, 0.4)):
        m = rng.binomial(n_spots, frac)
        centres = rng.uniform(0, shape, size=(m, ndim))
        sig = _voxel_sigma(sigma, scale)
        mass = rng.uniform(0.4, 1.0, m) * np.prod(np.sqrt(2 * np.pi) * sig)
        out += ndimage.gaussian_filter(_splat(shape, centres, mass), sig)
    for _ in range(n_rings):
        radius, width = rng.uniform(2.5, 5.0), 0.7
        box, grid = _box(shape, rng.uniform(0, shape), radius + 3 * width, scale)
        if box is None:
            continue
        r = np.sqrt(sum(g**2 for g in grid))
        out[box] += rng.uniform(0.4, 0.9) * np.exp(-0.5 * ((r - radius) / width) ** 2)
    return out


def _nuclei(shape, rng, n, scale) -> np.ndarray:
    """Large, dim, softly edged ellipsoids with chromatin-like texture."""
    ndim = len(shape)
    out = np.zeros(shape)
    for _ in range(n):
        radii = rng.uniform(18, 34, 2)
        if ndim == 3:
            radii = np.concatenate([[rng.uniform(0.5, 0.8) * radii.mean()], radii])
        # Box must hold the ellipse under any in-plane rotation.
        reach = np.concatenate([radii[:-2], [radii[-2:].max()] * 2])
        box, grid = _box(shape, rng.uniform(0, shape), 1.3 * reach, scale)
        phi, ph2, ph3 = rng.uniform(0, 2 * np.pi, 3)
        brightness = rng.uniform(0.15, 0.3)
        if box is None:
            continue
        # Rotate in-plane so ellipses are not axis-aligned.
        y, x = grid[-2:]
        u, v = np.cos(phi) * y + np.sin(phi) * x, -np.sin(phi) * y + np.cos(phi) * x
        rho2 = (u / radii[-2]) ** 2 + (v / radii[-1]) ** 2
        if ndim == 3:
            rho2 = rho2 + (grid[0] / radii[0]) ** 2
        # Low-order boundary wobble so nuclei are not perfect ellipses.
        ang = np.arctan2(v, u)
        wobble = 1 + 0.06 * np.cos(2 * ang + ph2) + 0.04 * np.cos(3 * ang + ph3)
        rho = np.sqrt(rho2) / wobble
        edge = 1.5 / radii[-2:].mean()  # ~1.5 px soft edge
        out[box] += brightness / (1 + np.exp(np.clip((rho - 1) / edge, -50, 50)))
    if n:
        # Chromatin texture: fine mottling plus darker nucleolus-sized holes.
        fine = ndimage.gaussian_filter(rng.normal(size=shape), 1.5 / scale)
        coarse = ndimage.gaussian_filter(rng.normal(size=shape), 5.0 / scale)
        fine /= fine.std() + 1e-12
        coarse /= coarse.std() + 1e-12
        out *= np.clip(0.8 + 0.25 * fine - 0.35 * np.maximum(coarse - 1.2, 0), 0.2, None)
    return out


def render_truth(shape: tuple[int, ...], rng: np.random.Generator, density: float = 1.0,
                 anisotropy: float = _ANISOTROPY) -> np.ndarray:
    """Render a fluorescence-like ground truth.

    Parameters
    ----------
    shape : tuple of int
        ``(Y, X)`` or ``(Z, Y, X)``.
    rng : numpy.random.Generator
        Source of all randomness.
    density : float
        Multiplies the expected number of objects.
    anisotropy : float
        Z voxel size over the lateral pixel size (3 by default; 1 renders an isotropic volume).

    Returns
    -------
    numpy.ndarray
        float32 array in ``[0, 1]``: filaments, vesicles/rings and dim nuclei.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must be 2D or 3D, got {shape}")
    scale = _scale(shape, anisotropy)
    tiles = shape[-1] * shape[-2] / 64**2 * density
    # _DEPTH is in planes of _ANISOTROPY lateral pixels: the same objects span more, thinner planes.
    depth = {k: shape[0] * anisotropy / (d * _ANISOTROPY) if len(shape) == 3 else 1.0 for k, d in _DEPTH.items()}
    n = {k: rng.poisson(r * tiles * depth[k]) for k, r in _RATES.items()}
    truth = (
        _nuclei(shape, rng, n["nuclei"], scale)
        + _filaments(shape, rng, n["filaments"], scale)
        + _vesicles(shape, rng, n["vesicles"], n["rings"], scale)
    )
    return np.clip(truth, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------
# Degradation
# --------------------------------------------------------------------------


def _defocus_otf(shape: tuple[int, int], std: float, focus_sigma: float) -> np.ndarray:
    """rfft2 transfer function of a soft pillbox (geometric defocus) * in-focus PSF.

    A pillbox gives the ring/disk-shaped halos of defocused widefield spots;
    its radius is chosen so the kernel's per-axis std equals ``std``.
    """
    radius = std / np.sqrt(0.25 + _SOFT**2)
    ky = 2 * np.pi * scipy.fft.fftfreq(shape[0])[:, None]
    kx = 2 * np.pi * scipy.fft.rfftfreq(shape[1])[None, :]
    k = np.hypot(ky, kx)
    kr = np.maximum(k * radius, 1e-12)
    disk = np.where(kr > 1e-6, 2 * special.j1(kr) / kr, 1.0)
    soft = np.exp(-0.5 * k**2 * ((_SOFT * radius) ** 2 + focus_sigma**2))
    return (disk * soft).astype(np.float32)


def _support(std: float, focus_sigma: float) -> int:
    """Radius (px) beyond which the defocus kernel is negligible."""
    radius = std / np.sqrt(0.25 + _SOFT**2)
    return int(np.ceil(radius + 3 * np.hypot(_SOFT * radius, focus_sigma)))


def _pad_xy(stack: np.ndarray, pad: int) -> np.ndarray:
    """Reflect-pad the last two axes by at least ``pad`` to an FFT-friendly size.

    The margin keeps the FFT's circular wrap-around away from the image.
    """
    width = [(0, 0)] * (stack.ndim - 2)
    for n in stack.shape[-2:]:
        width.append((pad, scipy.fft.next_fast_len(n + 2 * pad, real=True) - n - pad))
    return np.pad(stack, width, mode="reflect")


def _crop_xy(padded: np.ndarray, shape: tuple[int, ...], pad: int) -> np.ndarray:
    return padded[..., pad : pad + shape[-2], pad : pad + shape[-1]]


def _haze_2d(truth, haze_truth, m: Microscope) -> np.ndarray:
    """Out-of-focus light of the in-plane layer plus an independent hidden layer."""
    pad = _support(m.defocus_sigma, m.focus_sigma)
    src = _pad_xy((truth + haze_truth).astype(np.float32), pad)
    otf = _defocus_otf(src.shape, m.defocus_sigma, m.focus_sigma)
    out = scipy.fft.irfft2(scipy.fft.rfft2(src, workers=-1) * otf, s=src.shape, workers=-1)
    return m.haze_fraction * _crop_xy(out, truth.shape, pad)


def _haze_3d(truth, haze_truth, m: Microscope) -> np.ndarray:
    """Each plane receives its neighbours' light, blurred more with larger |dz|.

    ``haze_truth`` holds ``p`` planes above followed by ``p`` planes below the
    volume so edge planes get as much haze as central ones.
    """
    p = haze_truth.shape[0] // 2
    nz = truth.shape[0]
    dzs = np.arange(1, p + 1)
    # Light each plane sends to one side; normalised to haze_fraction per side.
    w = np.exp(-dzs / _DZ_DECAY)
    w *= m.haze_fraction / w.sum() if p else 0.0
    stds = m.defocus_sigma * np.minimum(dzs / _DZ_REF, _STD_CAP)
    pad = _support(stds.max() if p else 0.0, m.focus_sigma)
    stack = np.concatenate([haze_truth[:p], truth, haze_truth[p:]]).astype(np.float32)
    padded = _pad_xy(stack, pad)
    spec = scipy.fft.rfft2(padded, workers=-1)
    acc = np.zeros((nz,) + spec.shape[1:], dtype=spec.dtype)
    tmp = np.empty_like(acc)
    for dz, wz, std in zip(dzs, w, stds):
        otf = wz * _defocus_otf(padded.shape[1:], std, m.focus_sigma)
        np.add(spec[p + dz : p + dz + nz], spec[p - dz : p - dz + nz], out=tmp)
        tmp *= otf
        acc += tmp
    out = scipy.fft.irfft2(acc, s=padded.shape[1:], workers=-1)
    return _crop_xy(out, truth.shape, pad)


def _blur(truth: np.ndarray, sigma: float) -> np.ndarray:
    """The in-focus PSF through the physics operator the methods use.

    One axis at a time in float64, rounded to float32 after each, as scipy.ndimage.gaussian_filter
    does on float32 data: the demo data keep their bytes from before the operators existed.
    """
    x = torch.from_numpy(np.asarray(truth, dtype=np.float32))[None, None]
    with torch.no_grad():
        for axis in range(truth.ndim):
            sig = [0.0] * truth.ndim
            sig[axis] = sigma
            x = GaussianBlur(sig, dims=truth.ndim).A(x.double()).float()
    return x[0, 0].numpy()


def _noisy(expected: np.ndarray, photons: float, read_noise: float, rng) -> np.ndarray:
    """Poisson shot noise on ``expected * photons`` plus Gaussian read noise (in photons)."""
    return PoissonGaussian(1.0, 0.0, read_noise).sample_numpy(np.clip(expected, 0, None) * photons, rng)


def degrade(
    truth: np.ndarray,
    rng: np.random.Generator,
    microscope: Microscope = Microscope(),
    haze_truth: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Image ``truth`` with a widefield and a confocal microscope.

    Parameters
    ----------
    truth : numpy.ndarray
        2D or 3D ground truth, intensities ~[0, 1].
    rng : numpy.random.Generator
        Noise source (and hidden structures if ``haze_truth`` is None).
    microscope : Microscope
        Imaging parameters.
    haze_truth : numpy.ndarray, optional
        Out-of-focus structures that only reach the widefield input. 2D: same
        shape as ``truth``. 3D: ``(2p, Y, X)``, ``p`` planes above then ``p``
        below the volume. Rendered from ``rng`` when None.

    Returns
    -------
    widefield, confocal : numpy.ndarray
        float32 photon counts (not normalised, may be slightly negative).
    """
    m = microscope
    truth = np.asarray(truth, dtype=np.float32)
    if truth.ndim not in (2, 3):
        raise ValueError(f"truth must be 2D or 3D, got shape {truth.shape}")
    # Same sigma in voxels on every axis: Z voxels are ~3x coarser, matching
    # the ~3x longer axial extent of a confocal PSF.
    in_focus = _blur(truth, m.focus_sigma)
    expected = in_focus + np.float32(m.background)
    if m.haze_fraction > 0:
        if haze_truth is None:
            hidden = truth.shape if truth.ndim == 2 else (2 * _DZ_MAX,) + truth.shape[1:]
            haze_truth = render_truth(hidden, rng)
        haze_truth = np.asarray(haze_truth, dtype=np.float32)
        if haze_truth.ndim != truth.ndim or haze_truth.shape[-2:] != truth.shape[-2:]:
            raise ValueError(f"haze_truth {haze_truth.shape} does not fit truth {truth.shape}")
        haze = _haze_2d if truth.ndim == 2 else _haze_3d
        expected += haze(truth, haze_truth, m)
    widefield = _noisy(expected, m.photons, m.read_noise, rng)
    confocal = _noisy(in_focus, m.target_photons, m.target_read_noise, rng)
    return widefield, confocal


# --------------------------------------------------------------------------
# Pairs and demo data
# --------------------------------------------------------------------------


def _to_uint16(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _pair(shape, rng, microscope) -> tuple[np.ndarray, np.ndarray]:
    truth = render_truth(shape, rng)
    widefield, confocal = degrade(truth, rng, microscope)
    return _to_uint16(widefield), _to_uint16(confocal)


def make_pair(shape, seed: int, microscope: Microscope = Microscope()) -> tuple[np.ndarray, np.ndarray]:
    """Return a deterministic ``(widefield, confocal)`` uint16 pair for ``seed``."""
    return _pair(tuple(shape), np.random.default_rng(seed), microscope)


def _tiff_bytes(data: np.ndarray, axes: str, pixel_size, name: str) -> bytes:
    """Encode an OME-TIFF in memory with a content-derived (reproducible) UUID."""
    digest = hashlib.sha1(data.tobytes() + name.encode()).hexdigest()
    metadata = {"axes": axes, "UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, digest))}
    for ax, size in zip(axes, pixel_size):
        metadata[f"PhysicalSize{ax}"] = float(size)
        metadata[f"PhysicalSize{ax}Unit"] = "µm"
    buf = io.BytesIO()
    tifffile.imwrite(buf, data, ome=True, metadata=metadata)
    return buf.getvalue()


def _write_if_changed(path: str, payload: bytes) -> None:
    """Write atomically (temp sibling + rename); identical files are left alone.

    Skipping unchanged files keeps their mtimes, so workflow managers do not
    rerun downstream steps when acquisitions are only appended.
    """
    try:
        with open(path, "rb") as f:
            if f.read() == payload:
                return
    except FileNotFoundError:
        pass
    with atomic_output(path) as tmp:
        tmp.write_bytes(payload)


def write_demo(
    folder: str | os.PathLike,
    n_acquisitions: int,
    shape: tuple[int, ...],
    seed: int = 0,
    pixel_size: tuple[float, ...] | None = None,
    microscope: Microscope = Microscope(),
    input_suffix: str = "_wf.tif",
    target_suffix: str = "_confocal.tif",
    prefix: str = "demo",
) -> list[str]:
    """Write ``n_acquisitions`` widefield/confocal OME-TIFF pairs into ``folder``.

    Acquisition ``i`` is seeded with ``(seed, i)``, so appending acquisitions
    never changes existing files. ``pixel_size`` is in µm per axis, in array
    order; defaults to 0.1 µm lateral and 0.3 µm axial.

    Returns
    -------
    list of str
        Sorted acquisition ids ``f"{prefix}{i:03d}"``.
    """
    shape = tuple(int(s) for s in shape)
    axes = "ZYX"[-len(shape) :] if len(shape) in (2, 3) else None
    if axes is None:
        raise ValueError(f"shape must be 2D or 3D, got {shape}")
    if pixel_size is None:
        pixel_size = (0.3, 0.1, 0.1)[-len(shape) :]
    if len(pixel_size) != len(shape):
        raise ValueError(f"pixel_size {pixel_size} does not match shape {shape}")
    os.makedirs(folder, exist_ok=True)
    ids = []
    for i in range(n_acquisitions):
        acq = f"{prefix}{i:03d}"
        rng = np.random.default_rng([seed, i])
        pair = _pair(shape, rng, microscope)
        for data, suffix in zip(pair, (input_suffix, target_suffix)):
            name = acq + suffix
            payload = _tiff_bytes(data, axes, pixel_size, name)
            _write_if_changed(os.path.join(os.fspath(folder), name), payload)
        ids.append(acq)
    return sorted(ids)
