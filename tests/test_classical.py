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
