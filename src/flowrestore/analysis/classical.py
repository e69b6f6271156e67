"""Classical restorations with the true PSF, scored beside the methods (`evaluate.psf_sigma`).

Wiener deconvolution with the regularisation estimated from the image itself (scikit-image's
`unsupervised_wiener`, Orieux et al. 2010: no parameter to tune) and Richardson-Lucy
(`richardson_lucy`, `evaluate.rl_iterations` iterations, clip off). Both work in the input's raw
units, so they are compared with the target as they are: they assume that input and target share one
intensity scale, as the known-operator demos (demo.kind deblur) have it.
"""

from __future__ import annotations

import numpy as np

from ..physics.blur import gaussian_kernel


def deconvolutions(image: np.ndarray, sigma: float, iterations: int) -> list[tuple[str, str, np.ndarray]]:
    """[(model name, label, estimate)] for a 2D or 3D `image` blurred by a Gaussian of std `sigma` pixels."""
    from skimage.restoration import richardson_lucy, unsupervised_wiener

    psf = gaussian_kernel(sigma, image.ndim).numpy()
    x = np.asarray(image, dtype=np.float64)
    offset = float(x.min())  # Wiener is linear; a constant does not need deconvolving but skews its prior
    wiener, _ = unsupervised_wiener(x - offset, psf, clip=False, rng=0)
    rl = richardson_lucy(np.clip(x, 0, None), psf, num_iter=iterations, clip=False)
    return [("wiener", "Wiener (true PSF)", (wiener + offset).astype(np.float32)),
            ("richardson_lucy", f"Richardson-Lucy (true PSF, {iterations} it.)", rl.astype(np.float32))]
