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


# ------------------------------------------------------------------ RelativeFlow's D_delta
from flowrestore.physics.estimate import estimate_poisson_gaussian  # noqa: E402
from flowrestore.physics.relative import (GaussianDegradation, RicianDegradation, ThinningDegradation,  # noqa: E402
                                          make_degradation)


@pytest.mark.parametrize("delta", [0.05, 0.2, 0.5])
def test_thinning_operator_scales_poisson_gaussian_noise_by_exp_delta(delta):
    """Counts of mean 200 with read noise 3 (photo-electrons), in network units of scale 50: D_delta
    keeps the mean and multiplies the total noise std by e^delta (within 2%), per sample of a batch."""
    lam, read, scale, n = 200.0, 3.0, 50.0, 200_000
    g = torch.Generator().manual_seed(5)
    counts = torch.poisson(torch.full((2, 1, n), lam, dtype=torch.float64), generator=g)
    x = (counts + read * torch.randn(counts.shape, generator=g, dtype=torch.float64)) / scale
    deltas = torch.tensor([delta, 0.0], dtype=torch.float64)
    y = ThinningDegradation(scale, read).sample(x, deltas, g)
    ratio = float((y[0] - lam / scale).std() / (x[0] - lam / scale).std())
    assert ratio == pytest.approx(np.exp(delta), rel=0.02)
    assert float(y[0].mean()) == pytest.approx(lam / scale, rel=1e-3)
    torch.testing.assert_close(y[1], x[1])  # delta = 0 changes nothing


def test_thinning_without_read_noise_term_misses_the_target():
    """The read-noise term is needed: without it a read-noise-dominated image gets far less noisy."""
    scale, read, n, delta = 1.0, 20.0, 200_000, 0.5
    g = torch.Generator().manual_seed(6)
    x = (torch.poisson(torch.full((1, 1, n), 50.0), generator=g) + read * torch.randn(1, 1, n, generator=g)) / scale
    with_term = ThinningDegradation(scale, read).sample(x, delta, g)
    without = ThinningDegradation(scale, 0.0).sample(x, delta, g)
    target = float(x.std()) * np.exp(delta)
    assert float(with_term.std()) == pytest.approx(target, rel=0.02)
    assert float(without.std()) < 0.9 * target


@pytest.mark.parametrize("delta", [0.05, 0.2, 0.5])
def test_gaussian_operator_scales_the_std_by_exp_delta(delta):
    g = torch.Generator().manual_seed(7)
    sigma, n = 0.3, 400_000
    x = 2.0 + sigma * torch.randn(1, 1, n, generator=g, dtype=torch.float64)
    y = GaussianDegradation(sigma).sample(x, delta, g)
    assert float((y - 2.0).std() / (x - 2.0).std()) == pytest.approx(np.exp(delta), rel=0.02)


@pytest.mark.parametrize("signal", [0.0, 0.5, 3.0])
@pytest.mark.parametrize("delta", [0.05, 0.5])
def test_rician_operator_gives_rician_data_of_std_sigma_exp_delta(signal, delta):
    """E[M^2] = s^2 + 2 sigma^2 and E[M^4] = s^4 + 8 s^2 sigma^2 + 8 sigma^4 for M Rician(s, sigma):
    both moments of D_delta(M) match sigma e^delta, including at s = 0 (Rayleigh) where the
    magnitude's own spread is not Gaussian."""
    g = torch.Generator().manual_seed(8)
    sigma, n = 0.4, 400_000
    re, im = torch.randn(2, 1, 1, n, generator=g, dtype=torch.float64)
    m = torch.sqrt((signal + sigma * re) ** 2 + (sigma * im) ** 2)
    y = RicianDegradation(sigma).sample(m, delta, g)
    s2 = (sigma * np.exp(delta)) ** 2
    assert float((y**2).mean()) == pytest.approx(signal**2 + 2 * s2, rel=0.01)
    assert float((y**4).mean()) == pytest.approx(signal**4 + 8 * signal**2 * s2 + 8 * s2**2, rel=0.03)


def test_make_degradation_converts_raw_units_to_network_units():
    opts = {"operator": "thinning", "gain": 2.0, "offset": 100.0, "read_noise": 6.0, "sigma": 0.0, "scale": 50.0}
    op = make_degradation(opts)
    assert isinstance(op, ThinningDegradation) and op.scale == 50.0 and op.read_noise == 3.0  # ADU / gain
    op = make_degradation(opts | {"operator": "gaussian", "sigma": 10.0})
    assert isinstance(op, GaussianDegradation) and op.sigma == pytest.approx(0.1)  # 10 ADU / (2 * 50)


def _camera_image(gain, offset, read, seed):
    """A 512^2 image in ADU of known camera parameters: smooth gradients from dark (where read noise
    shows) to bright, and bright spots (structure the estimate must not mistake for noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:512, :512] / 512
    signal = 2000 * xx**2 * (0.5 + 0.5 * np.sin(3 * yy))
    spots = np.zeros((512, 512))
    spots[rng.integers(0, 512, 300), rng.integers(0, 512, 300)] = 5e4
    signal = signal + ndimage.gaussian_filter(spots, 1.5)
    return PoissonGaussian(gain, offset, read).sample_numpy(signal, rng)


@pytest.mark.parametrize("gain,read", [(2.5, 4.0), (0.8, 1.5)])
def test_noise_estimate_recovers_gain_and_read_noise(gain, read):
    image = _camera_image(gain, 100.0, read, seed=9)
    est = estimate_poisson_gaussian(image, offset=100.0)
    assert est.gain == pytest.approx(gain, rel=0.05)
    assert est.read_noise == pytest.approx(read, rel=0.1)
    dark = PoissonGaussian(gain, 100.0, read).sample_numpy(np.zeros((256, 256)), np.random.default_rng(10))
    est = estimate_poisson_gaussian(image, dark=dark)
    assert est.offset == pytest.approx(100.0, abs=0.1) and est.read_noise == pytest.approx(read, rel=0.02)
    with pytest.raises(ValueError, match="offset or a dark frame"):
        estimate_poisson_gaussian(image)
