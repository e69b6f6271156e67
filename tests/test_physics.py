"""Property tests run on every registered operator and noise model (registering one tests it)."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from flowrestore.physics import (NOISE_MODELS, OPERATORS, AreaDownsample, AxialDownsample, BinomialThinning,
                                 GaussianBlur, LearnableBlur, LinearOperator, PoissonGaussian, adjointness_error)

CASES = [(name, dims) for name in OPERATORS for dims in (2, 3) if OPERATORS[name](dims) is not None]
SHAPES = {2: (24, 20), 3: (8, 12, 10)}


@pytest.mark.parametrize("name,dims", CASES)
def test_adjoint_identity_in_float64(name, dims):
    op = OPERATORS[name](dims)
    assert isinstance(op, LinearOperator)
    assert adjointness_error(op, SHAPES[dims]) < 1e-12


@pytest.mark.parametrize("name,dims", CASES)
def test_output_shape_is_what_A_returns(name, dims):
    op = OPERATORS[name](dims).double()
    x = torch.zeros((1, 1, *SHAPES[dims]), dtype=torch.float64)
    assert tuple(op.A(x).shape[2:]) == op.output_shape(SHAPES[dims])


@pytest.mark.parametrize("name,dims", CASES)
def test_parameters_travel_in_state_dict(name, dims):
    op = OPERATORS[name](dims)
    tensors = dict(op.state_dict())
    for key, value in tensors.items():
        assert torch.is_tensor(value), key
    copy = OPERATORS[name](dims)
    copy.load_state_dict(tensors)


@pytest.mark.parametrize("sigma,dims", [(1.0, 2), (2.3, 2), ([1.0, 0.7, 1.5], 3)])
def test_gaussian_blur_matches_scipy_reflect(sigma, dims):
    rng = np.random.default_rng(0)
    x = rng.random(SHAPES[dims])
    expected = ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=4.0)
    got = GaussianBlur(sigma, dims=dims).A(torch.from_numpy(x)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)


def test_rotated_gaussian_has_its_covariance():
    """Second moments of the 30-degree kernel equal R diag(s^2) R^T (up to truncation)."""
    k = GaussianBlur([2.5, 1.5], dims=2, angle=30.0, truncate=6.0).psf.numpy()
    r = (k.shape[0] - 1) // 2
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    cov = np.array([[np.sum(k * y * y), np.sum(k * y * x)], [np.sum(k * x * y), np.sum(k * x * x)]])
    a = np.radians(30.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])  # u = R^T (y, x)
    expected = rot @ np.diag([2.5**2, 1.5**2]) @ rot.T
    np.testing.assert_allclose(cov, expected, atol=1e-3)


def test_area_downsample_is_the_block_mean():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = AreaDownsample(2).A(x)
    assert y[0, 0].tolist() == [[(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4], [(8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4]]
    z = AxialDownsample(3).A(torch.arange(6.0).reshape(1, 1, 6, 1, 1))
    assert z.flatten().tolist() == [1.0, 4.0]


def test_learnable_blur_kernel_sums_to_one_and_gets_gradients():
    op = LearnableBlur(7, init_sigma=1.0)
    with torch.no_grad():
        op.weight.mul_(3.0)
    assert float(op.kernel().sum()) == pytest.approx(1.0, abs=1e-6)
    op.A(torch.rand(1, 1, 16, 16)).square().sum().backward()
    assert op.weight.grad is not None and torch.isfinite(op.weight.grad).all()


@pytest.mark.parametrize("name", sorted(NOISE_MODELS))
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_noise_mean_and_variance_match_the_formula(name, backend):
    model = NOISE_MODELS[name]()
    n = 200_000
    levels = [5.0, 40.0, 300.0]
    for level in levels:
        x = np.full(n, level)
        if backend == "torch":
            y = model.sample(torch.from_numpy(x), torch.Generator().manual_seed(1)).numpy()
        else:
            y = model.sample_numpy(x, np.random.default_rng(1))
        mean, var = float(model.mean(torch.tensor(level))), float(model.variance(torch.tensor(level)))
        # 5 standard errors: of the mean sqrt(var/n), of the variance ~ var*sqrt(2/n) (plus excess kurtosis)
        assert abs(y.mean() - mean) < 5 * np.sqrt(var / n) + 1e-9, (level, y.mean(), mean)
        assert abs(y.var() - var) < 5 * var * np.sqrt(3 / n) + 1e-9, (level, y.var(), var)


@pytest.mark.parametrize("delta", [0.05, 0.2, 0.5])
def test_thinning_poisson_counts_scales_the_noise_std_by_exp_delta(delta):
    """RelativeFlow's D_delta: thinning with p = exp(-2 delta) multiplies the noise std by exp(delta)."""
    lam, n = 200.0, 400_000
    rng = np.random.default_rng(2)
    counts = rng.poisson(lam, n).astype(np.float64)
    thinned = BinomialThinning(np.exp(-2 * delta)).sample_numpy(counts, rng)
    ratio = np.std(thinned - lam) / np.std(counts - lam)
    assert ratio == pytest.approx(np.exp(delta), rel=0.02)


def test_poisson_gaussian_numpy_keeps_the_simulators_bytes():
    """gain 1, offset 0: the same draws, in the same order, as rng.poisson + rng.normal."""
    x = np.random.default_rng(3).random((16, 16)) * 50
    got = PoissonGaussian(1.0, 0.0, 2.0).sample_numpy(x, np.random.default_rng(4))
    rng = np.random.default_rng(4)
    expected = rng.poisson(x).astype(np.float32) + rng.normal(0.0, 2.0, x.shape).astype(np.float32)
    np.testing.assert_array_equal(got, expected)
