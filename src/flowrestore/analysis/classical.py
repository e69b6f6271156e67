"""Classical restorations with a given PSF, scored beside the methods (`evaluate.psf_sigma`, `evaluate.psfs`).

Wiener deconvolution with the regularisation estimated from the image itself (scikit-image's
`unsupervised_wiener`, Orieux et al. 2010: no parameter to tune) and Richardson-Lucy
(`richardson_lucy`, `evaluate.rl_iterations` iterations, clip off). Both work in the input's raw
units, so they are compared with the target as they are: they assume that input and target share one
intensity scale, as the known-operator demos (demo.kind deblur) have it.
"""

from __future__ import annotations

import numpy as np

from ..physics.blur import gaussian_kernel


def deconvolutions(image: np.ndarray, psf, iterations: int, label: str = "true PSF",
                   key: str = "") -> list[tuple[str, str, np.ndarray]]:
    """[(model name, label, estimate)] for a 2D or 3D `image` blurred by `psf`: a Gaussian std in pixels or a
    PSF array of `image.ndim` axes (normalised here). Names are "wiener" and "richardson_lucy", with "_" + `key`
    appended when `key` is given; labels name the PSF by `label`."""
    from skimage.restoration import richardson_lucy, unsupervised_wiener

    if np.ndim(psf) == 0:
        psf = gaussian_kernel(float(psf), image.ndim).numpy()
    psf = np.asarray(psf, dtype=np.float64)
    psf = psf / psf.sum()
    x = np.asarray(image, dtype=np.float64)
    offset = float(x.min())  # Wiener is linear; a constant does not need deconvolving but skews its prior
    wiener, _ = unsupervised_wiener(x - offset, psf, clip=False, rng=0)
    rl = richardson_lucy(np.clip(x, 0, None), psf, num_iter=iterations, clip=False)
    tail = f"_{key}" if key else ""
    return [(f"wiener{tail}", f"Wiener ({label})", (wiener + offset).astype(np.float32)),
            (f"richardson_lucy{tail}", f"Richardson-Lucy ({label}, {iterations} it.)", rl.astype(np.float32))]
