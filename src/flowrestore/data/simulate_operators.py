"""Demo acquisitions degraded by a forward operator (`demo.kind` super_resolution, deblur, isotropic or unknown_blur).

The clean image is the demo's ground truth (filaments, vesicles, nuclei: `simulate.render_truth`) seen
through the in-focus PSF, plus a background, at `photons` photo-electrons per unit intensity, without
noise: the target. The input is that image through the same operator the restoration uses
(`flowrestore.physics`): pixel integration by `factor` (super_resolution: each input pixel is the mean
of factor x factor target pixels, at the same photons per unit intensity), a Gaussian blur of std
`sigma` target pixels (deblur) or axial integration of slabs of `factor` planes (isotropic: the truth is
rendered on isotropic voxels, the input is a stack `factor` times coarser in Z) or the anisotropic
Gaussian PSF `psf` (unknown_blur: stds in pixels, rotated by `angle` degrees, on a size x size grid,
centred; the restoration is not told it and learns it, DDM4IP), then Poisson shot noise and Gaussian
read noise (`PoissonGaussian`).
Inputs and targets share one intensity scale (photo-electrons), so [0, photons] read as [0, 1] is a
fixed normalisation for both (flow_prior's `range`).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..physics import AreaDownsample, AxialDownsample, Blur, GaussianBlur
from ..physics.blur import gaussian_kernel
from .simulate import Microscope, _blur, _noisy, _tiff_bytes, _to_uint16, _write_if_changed, render_truth

KINDS = ("super_resolution", "deblur", "isotropic", "unknown_blur")
PSF_FILE = "psf.tif"  # unknown_blur: the true PSF, written beside the acquisitions (to score a learned kernel)


def demo_psf(psf: dict) -> torch.Tensor:
    """unknown_blur's PSF from the demo's `psf` settings {sigma: [s_y, s_x], angle, size}, sum 1, float64."""
    return gaussian_kernel(tuple(psf["sigma"]), 2, angle=psf["angle"], size=psf["size"])


def operator_of(kind: str, dims: int, factor: int, sigma: float, psf: dict | None = None):
    if kind == "unknown_blur":
        if dims != 2 or psf is None:
            raise ValueError("demo.kind unknown_blur needs a YX demo.shape and demo.psf")
        return Blur(demo_psf(psf))
    if kind == "super_resolution":
        return AreaDownsample(factor, dims=dims)
    if kind == "deblur":
        return GaussianBlur(sigma, dims=dims)
    if kind == "isotropic":
        if dims != 3:
            raise ValueError("demo.kind isotropic needs a ZYX demo.shape")
        return AxialDownsample(factor)
    raise ValueError(f"unknown demo kind {kind!r}; choose one of {KINDS}")


def make_known_pair(shape: tuple[int, ...], rng: np.random.Generator, kind: str, factor: int = 4, sigma: float = 2.0,
                    photons: float = 1000.0, microscope: Microscope = Microscope(),
                    psf: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) uint16 photo-electron counts: target `shape`, input `shape` / factor in Y, X for
    super_resolution, in Z for isotropic, `shape` for deblur."""
    truth = render_truth(shape, rng, anisotropy=1.0) if kind == "isotropic" else render_truth(shape, rng)
    clean = (_blur(truth, microscope.focus_sigma) + np.float32(microscope.background)) * np.float32(photons)
    op = operator_of(kind, len(shape), factor, sigma, psf).double()
    with torch.no_grad():
        expected = op.A(torch.from_numpy(clean.astype(np.float64))[None, None])[0, 0].numpy()
    noisy = _noisy(expected / photons, photons, microscope.read_noise, rng)
    return _to_uint16(noisy), _to_uint16(clean)


def write_known_demo(folder: str | os.PathLike, n_acquisitions: int, shape: tuple[int, ...], kind: str, seed: int = 0,
                     factor: int = 4, sigma: float = 2.0, photons: float = 1000.0, input_suffix: str = "_wf.tif",
                     target_suffix: str = "_confocal.tif", prefix: str = "demo", pixel_size: float = 0.1,
                     psf: dict | None = None) -> list[str]:
    """Write `n_acquisitions` OME-TIFF pairs into `folder` (target pixel size `pixel_size` µm; the input's
    is `factor` times larger in Y and X for super_resolution, in Z for isotropic; an isotropic target's Z
    voxel is `pixel_size`, the others' 0.3 µm). Acquisition i is seeded with (seed, i); files whose
    bytes do not change are left alone. unknown_blur also writes its true PSF, `PSF_FILE` (float32, sum 1).
    Returns the sorted acquisition ids."""
    shape = tuple(int(s) for s in shape)
    grid = operator_of(kind, len(shape), factor, sigma, psf).grid_factor(len(shape))
    if any(n % f for n, f in zip(shape, grid)):
        raise ValueError(f"demo.shape {shape} is not a multiple of demo.factor {factor} along {'ZYX'[-len(shape):]}")
    axes = "ZYX"[-len(shape):]
    target_size = (pixel_size if kind == "isotropic" else 0.3, pixel_size, pixel_size)[-len(shape):]
    input_size = tuple(p * f for p, f in zip(target_size, grid))
    os.makedirs(folder, exist_ok=True)
    ids = []
    for i in range(n_acquisitions):
        acq = f"{prefix}{i:03d}"
        pair = make_known_pair(shape, np.random.default_rng([seed, i]), kind, factor, sigma, photons, psf=psf)
        for data, suffix, size in zip(pair, (input_suffix, target_suffix), (input_size, target_size)):
            _write_if_changed(os.path.join(os.fspath(folder), acq + suffix), _tiff_bytes(data, axes, size, acq + suffix))
        ids.append(acq)
    if kind == "unknown_blur":
        kernel = demo_psf(psf).numpy().astype(np.float32)
        _write_if_changed(os.path.join(os.fspath(folder), PSF_FILE), _tiff_bytes(kernel, "YX", (pixel_size,) * 2, PSF_FILE))
    return sorted(ids)
