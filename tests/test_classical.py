"""Wiener and Richardson-Lucy with the true PSF (the deblurring demo's classical baselines)."""

import numpy as np

from flowrestore.analysis import metrics as M
from flowrestore.analysis.classical import deconvolutions
from flowrestore.data.simulate_operators import make_known_pair


def test_deconvolution_with_the_true_psf_beats_the_blurred_input():
    blurred, sharp = (a.astype(np.float32) for a in make_known_pair((96, 96), np.random.default_rng(3), "deblur"))
    before = M.psnr(blurred, sharp)
    found = deconvolutions(blurred, 2.0, 30)
    assert [name for name, _, _ in found] == ["wiener", "richardson_lucy"]
    for _, _, estimate in found:
        assert estimate.shape == sharp.shape and M.psnr(estimate, sharp) > before + 1.0


def test_super_resolution_demo_input_is_the_noisy_block_mean_of_its_target():
    low, high = (a.astype(np.float64) for a in make_known_pair((64, 64), np.random.default_rng(0), "super_resolution"))
    means = high.reshape(16, 4, 16, 4).mean(axis=(1, 3))
    noise = low - means
    assert low.shape == (16, 16)
    # Poisson-Gaussian at 1000 photons per unit intensity (the target is in photons): var = mean + 2^2 (+ rounding)
    assert abs(noise.mean()) < 3 * np.sqrt(means.mean() / noise.size) + 0.5
    assert 0.7 < noise.var() / (means.mean() + 4.0) < 1.3


def test_deconvolution_with_a_psf_array_names_it_and_the_right_psf_wins():
    """unknown_blur's anisotropic PSF given as an array: Wiener with it beats Wiener with an isotropic guess."""
    psf = {"sigma": [2.5, 1.5], "angle": 30.0, "size": 15}
    blurred, sharp = (a.astype(np.float32) for a in make_known_pair((96, 96), np.random.default_rng(4), "unknown_blur",
                                                                    psf=psf))
    r = 7
    y, x = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    u, v = np.cos(np.pi / 6) * y + np.sin(np.pi / 6) * x, -np.sin(np.pi / 6) * y + np.cos(np.pi / 6) * x
    true = np.exp(-0.5 * ((u / 2.5) ** 2 + (v / 1.5) ** 2))  # unnormalised: deconvolutions normalises it
    found = {name: (label, est) for name, label, est in deconvolutions(blurred, true, 30, "true PSF", "true_psf")}
    assert set(found) == {"wiener_true_psf", "richardson_lucy_true_psf"}
    assert found["wiener_true_psf"][0] == "Wiener (true PSF)"
    guess = deconvolutions(blurred, 2.0, 30, "isotropic guess", "iso")[0][2]
    assert M.psnr(found["wiener_true_psf"][1], sharp) > M.psnr(guess, sharp) + 0.2
