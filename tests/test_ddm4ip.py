"""DDM4IP stage 2 (methods/ddm4ip.py): the kernel step, its regularisers, exact resume and the kernel score."""

import io
import math

import pytest
import torch

from flowrestore.methods import ddm4ip as D
from flowrestore.models.nets import NetConfig, UNet
from flowrestore.physics.blur import gaussian_kernel

N = 32  # toy image edge, pixels
SIZE = 11  # toy kernel edge, pixels
SIGMA = 0.05  # toy read noise std, image units


def tiny_unet(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(NetConfig(dims=2, in_channels=1, out_channels=1, channels=8, multipliers=[1, 2], blocks=1,
                          norm="group"))


def power(k: torch.Tensor) -> torch.Tensor:
    """|DFT|^2 of kernel k embedded in an N x N image: the blur's transfer power under circular padding."""
    big = torch.zeros(N, N, dtype=k.dtype)
    big[:k.shape[0], :k.shape[1]] = k
    return torch.fft.fft2(big).abs() ** 2


def gaussian_velocity(kernel_power: torch.Tensor, sigma: float = SIGMA):
    """The exact flow velocity of y = k * x + sigma n with x, n white N(0, I) (circular blur).

    y ~ N(0, C) with C = K K^T + sigma^2 I, diagonal in Fourier with eigenvalues c(f) = |K(f)|^2 + sigma^2.
    On x_t = (1 - t) eps + t y, x_t ~ N(0, S_t), S_t = t^2 C + (1 - t)^2 I, and (x_t, y - eps) are jointly
    Gaussian with Cov(y - eps, x_t) = t C - (1 - t) I, so the velocity E[y - eps | x_t] is the linear
    regression (t C - (1 - t) I) S_t^{-1} x_t, applied per frequency as the gain
    (t c - (1 - t)) / (t^2 c + (1 - t)^2). Checks: t = 0 gives gain -1, v = -x = E[y - eps | x_0 = eps];
    t = 1 gives gain 1, v = x = E[y - eps | x_1 = y] (eps is independent of y, mean 0).
    """
    c = kernel_power + sigma ** 2

    def v(x, t):
        tt = t.view(-1, 1, 1, 1).to(x.dtype)
        gain = (tt * c - (1 - tt)) / (tt ** 2 * c + (1 - tt) ** 2)
        return torch.fft.ifft2(gain * torch.fft.fft2(x)).real

    return v


def test_gaussian_velocity_is_the_conditional_mean():
    """Monte Carlo check of the analytic velocity: regress y - eps on x_t empirically at one t."""
    g = torch.Generator().manual_seed(0)
    k = gaussian_kernel((2.0, 1.0), 2, angle=30, size=SIZE)
    blur = D.DirectKernel(SIZE, 1.0, padding="circular").double()
    blur.weight.data = k.clone()
    x = torch.randn(1000, 1, N, N, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = D.degrade(blur, x, SIGMA, g)
    eps = torch.randn(y.shape, generator=g, dtype=torch.float64)
    t = torch.full((y.shape[0],), 0.6, dtype=torch.float64)
    xt = 0.4 * eps + 0.6 * y
    v = gaussian_velocity(power(k))(xt, t)
    residual = (y - eps) - v
    # The conditional mean is the best predictor: its residual is uncorrelated with x_t ...
    corr = (residual * xt).mean() / (residual.std() * xt.std())
    assert abs(float(corr.detach())) < 0.01
    # ... and a scaled predictor does worse.
    assert float((residual ** 2).mean()) < float(((y - eps - 0.8 * v.detach()) ** 2).mean())


def test_matching_gradient_is_zero_when_aux_equals_ref():
    v_ref = tiny_unet()
    v_aux = tiny_unet()  # same seed: the same weights
    model = D.DirectKernel(7, 1.5)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    loss, _ = D.kernel_loss(model, v_ref, v_aux, x, 0.05, {}, torch.Generator().manual_seed(2))
    loss.backward()
    assert torch.equal(model.weight.grad, torch.zeros_like(model.weight))
    # Control: a different v_aux gives a gradient, so the zero above is not the loss ignoring phi.
    model.weight.grad = None
    other = tiny_unet(seed=3)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1)
    loss, _ = D.kernel_loss(model, v_ref, other, x, 0.05, {}, torch.Generator().manual_seed(2))
    loss.backward()
    assert float(model.weight.grad.abs().max()) > 0


def _toy_run(model, steps: int, lr: float):
    """Kernel steps on the analytic Gaussian toy: v_ref of the true blur, v_aux of the current estimate."""
    k_true = gaussian_kernel((2.0, 1.0), 2, angle=30, size=SIZE)
    p_true = power(k_true)
    v_ref = gaussian_velocity(p_true)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=D.BETAS)
    g = torch.Generator().manual_seed(1)

    def distance():
        return float((power(model.kernel().detach()) - p_true).norm() / p_true.norm())

    before = distance()
    for _ in range(steps):
        v_aux = gaussian_velocity(power(model.kernel().detach()))  # the ideal auxiliary flow
        x = torch.randn(8, 1, N, N, generator=g, dtype=torch.float64)
        D.kernel_step(model, opt, v_ref, v_aux, x, SIGMA, None, g)
    return before, distance(), k_true


def test_kernel_steps_move_the_power_spectrum_to_the_true_one():
    """Direct kernel from an isotropic sigma 1.5 guess: the spectral distance falls >10x in 100 steps
    (measured: 0.34 -> 0.003)."""
    model = D.DirectKernel(SIZE, 1.5, padding="circular").double()
    before, after, _ = _toy_run(model, 100, 1e-3)
    assert before > 0.3
    assert after < 0.1 * before


def test_gaussian_kernel_steps_recover_the_parameters():
    """The 3-parameter model reaches the true stds (2, 1) and angle 30 degrees on the toy."""
    model = D.GaussianKernel(SIZE, (1.5, 1.5), 10.0, padding="circular").double()
    before, after, _ = _toy_run(model, 150, 2e-2)
    assert after < 0.1 * before
    s = torch.exp(model.log_sigma.detach())
    assert torch.allclose(s, torch.tensor([2.0, 1.0], dtype=s.dtype), atol=0.15)
    angle = math.degrees(float(model.angle.detach())) % 180
    assert abs(angle - 30) < 5


def test_gaussian_kernel_model_matches_physics_gaussian_kernel():
    model = D.GaussianKernel(15, (2.5, 1.5), 30.0).double()
    ref = gaussian_kernel((2.5, 1.5), 2, angle=30, size=15)
    assert torch.allclose(model.kernel(), ref, atol=1e-12)


def _learner(seed=0):
    v_ref = tiny_unet(seed)
    return D.KernelLearner(v_ref, D.DirectKernel(7, 1.5), 0.05, {"sparsity": 0.1, "centring": 0.01,
                                                                   "sum_to_one": 1.0, "gaussian": 1.0},
                           lr_kernel=1e-3, lr_aux=1e-3, seed=5)


def test_resume_equals_an_uninterrupted_run():
    data = torch.rand(4, 2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    whole = _learner()
    for i in range(4):
        whole.step(data[i, :1], data[i, 1:])
    first = _learner()
    for i in range(2):
        first.step(data[i, :1], data[i, 1:])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = _learner()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for i in range(2, 4):
        resumed.step(data[i, :1], data[i, 1:])
    assert resumed.steps == 4
    assert torch.equal(resumed.kernel.weight, whole.kernel.weight)
    for a, b in zip(resumed.v_aux.parameters(), whole.v_aux.parameters()):
        assert torch.equal(a, b)
    # The kernel did move (so equality is not two untouched copies).
    assert not torch.equal(whole.kernel.weight, _learner().kernel.weight)


def test_v_ref_stays_frozen_and_v_aux_starts_as_its_copy():
    learner = _learner()
    ref = [p.clone() for p in learner.v_ref.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(learner.v_aux.parameters(), ref))
    x = torch.rand(2, 1, 16, 16)
    learner.step(x, x)
    assert all(torch.equal(a, b) for a, b in zip(learner.v_ref.parameters(), ref))
    assert not all(torch.equal(a, b) for a, b in zip(learner.v_aux.parameters(), ref))


def test_kernel_error_of_shifted_and_scaled_copies():
    k = gaussian_kernel((2.5, 1.5), 2, angle=30, size=15)
    small = torch.zeros(15, 15, dtype=torch.float64)
    small[3:12, 3:12] = gaussian_kernel((1.2, 0.8), 2, angle=30, size=9)  # a zero border of 3 pixels
    shifted = torch.roll(small, (2, -1), dims=(0, 1))  # so the roll wraps nothing around
    assert D.kernel_error(shifted, small) < 1e-10
    assert D.kernel_error(shifted, small, align="round") < 1e-12
    assert D.kernel_error(2 * k, k) == pytest.approx(1.0, abs=1e-10)
    assert D.kernel_error(0.5 * torch.roll(small, (1, 1), dims=(0, 1)), small) == pytest.approx(0.5, abs=1e-9)
    # Different kernels score above 0, and a half-pixel shift is undone by the Fourier alignment only.
    assert D.kernel_error(small, k) > 0.3
    half = D.fourier_shift(torch.nn.functional.pad(small, (4, 4, 4, 4)), (0.5, 0.0))[4:-4, 4:-4]
    # (not to 0: the phase ramp rings on the hard 9 x 9 edge; measured 0.004 against 0.38 for whole pixels)
    assert D.kernel_error(half, small) < 0.01
    assert D.kernel_error(half, small, align="round") > 0.2
    with pytest.raises(ValueError):
        D.kernel_error(k[:-2, :-2], k)


def test_regularisers_known_values():
    delta = torch.zeros(7, 7, dtype=torch.float64)
    delta[4, 1] = 1.0  # centre is (3, 3): squared distance 1 + 4
    assert float(D.centring(delta)) == pytest.approx(5.0)
    assert float(D.sum_to_one(3 * delta)) == pytest.approx(4.0)
    assert float(D.sparsity(delta - 0.5 * torch.roll(delta, 1, 0))) == pytest.approx(1.5 / 49)
    g = gaussian_kernel((1.5, 1.0), 2, angle=20, size=15)
    assert float(D.gaussianity(g)) < 1e-8  # a Gaussian well inside its grid is its own moment-matched Gaussian
    box = torch.zeros(15, 15, dtype=torch.float64)
    box[5:10, 5:10] = 1 / 25
    assert float(D.gaussianity(box)) > 1e-4
    assert set(D.regularisers(D.DirectKernel(7, 1.0))) == set(D.REGULARISERS)
    with pytest.raises(ValueError):
        D.kernel_loss(D.DirectKernel(7, 1.0), tiny_unet(), tiny_unet(), torch.rand(1, 1, 16, 16), 0.05, {"tv": 1.0})


def test_degrade_noise_variance_follows_the_blurred_signal():
    """gain > 0: Var(y_hat) = sigma^2 + gain * A x (Poisson-Gaussian's Gaussian approximation)."""
    model = D.DirectKernel(5, 1.0).double()
    x = torch.full((4000, 1, 8, 8), 0.5, dtype=torch.float64)
    x[..., 4:] = 2.0  # two levels, so the variance must follow the signal, not a constant
    y = D.degrade(model, x, 0.01, torch.Generator().manual_seed(0), gain=1e-2).detach()
    ax = model.A(x[:1]).detach()[0, 0]
    var = y.var(dim=0)[0]
    expect = 0.01 ** 2 + 1e-2 * ax
    assert torch.allclose(var, expect, rtol=0.1)
    assert float(var[0, 7] / var[0, 0]) > 3
