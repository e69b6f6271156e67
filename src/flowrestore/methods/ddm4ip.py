"""DDM4IP: learn an unknown blur PSF from unpaired degraded and clean images by matching flows.

Source: Ryan, Kervazo, Mairal et al., "Unsupervised Imaging Inverse Problems with Diffusion
Distribution Matching", ICCV 2025 (arXiv 2506.14605), and the authors' code
github.com/inria-thoth/ddm4ip ("DiffInstruct-on-Y"). Two stages are implemented here:

Stage 1: a flow-matching model v_ref of the degraded images y alone, with the loss of the project's
unconditional flow prior (`flow_prior.FlowPrior.loss`, uniform t, no coupling):
    x_t = (1 - t) eps + t x1,  eps ~ N(0, I),  loss = mean |v(x_t, t) - (x1 - eps)|^2.

Stage 2: a kernel model A_phi (the forward operator y = k * x + sigma n) and an auxiliary flow v_aux,
initialised as a copy of v_ref, trained alternately, one step each:
  - aux step: the flow-matching loss of v_aux on y_hat = A_phi(x) + sigma n for clean x (phi frozen,
    y_hat detached), so that v_aux tracks the velocity of the current estimate's degraded images;
  - kernel step: the distribution-matching loss
        L_DI = mean( stopgrad(v_aux(y_t, t) - v_ref(y_t, t)) * y1 ),  y1 = A_phi(x) + sigma n,
        y_t = (1 - t) eps + t y1,
    whose gradient flows through y1 only, plus weighted regularisers of the kernel (sparsity,
    centring, sum to one, Gaussian-likeness).

Why L_DI moves A_phi toward the true operator (DiffInstruct, Luo et al. 2023): on this path the
velocity and the score of p_t are tied, score(x, t) = -(x - t v(x, t)) / (1 - t), so
score_aux - score_ref = t / (1 - t) (v_aux - v_ref), and d KL(p_phi,t || p_ref,t) / d phi =
E[(score_aux - score_ref)(y_t) . d y_t / d phi] with d y_t / d phi = t d y1 / d phi. L_DI's gradient
is therefore, for each t, a positive multiple of that KL's gradient (the time weight t^2 / (1 - t)
is dropped, as in the paper); it is zero when v_aux equals v_ref.

Images are (batch, channels, Y, X) tensors in one fixed intensity scale for clean and degraded sets
(a PSF of sum 1 maps constants to themselves, so an affine normalisation shared by both keeps
y = k * x exact). Kernels are (size, size) tensors, pixel units, centre at index size // 2.
"""

from __future__ import annotations

import copy
import hashlib
import math
from typing import Callable

import torch
from torch import nn

from ..physics.blur import Blur, LearnableBlur

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # v(x, t): x (B, C, Y, X), t (B,)

BETAS = (0.9, 0.99)  # Adam betas of the authors' code, for both networks
REGULARISERS = ("sparsity", "centring", "sum_to_one", "gaussian")


# ---------------------------------------------------------------------------------------- kernel models
class DirectKernel(LearnableBlur):
    """A size x size PSF, every pixel a parameter, normalised to sum 1 on use (the paper's direct kernel).

    `raw()` is the unnormalised weight: the sum-to-one regulariser reads it, because the normalised
    kernel sums to 1 by construction while the weight's scale would otherwise drift freely.
    """

    def __init__(self, size: int, init_sigma: float = 2.0, padding: str = "symmetric"):
        super().__init__(size, dims=2, init_sigma=init_sigma, padding=padding)

    def raw(self) -> torch.Tensor:
        return self.weight


class GaussianKernel(Blur):
    """An anisotropic Gaussian PSF with 3 parameters: stds (sigma1, sigma2) in pixels and an angle.

    Same kernel as `physics.blur.gaussian_kernel((sigma1, sigma2), 2, angle_degrees, size=size)`
    (sigma1 along the axis rotated `angle` from Y toward X), but differentiable in its parameters.
    The stds are stored as logs so they stay positive. Sum 1 by construction.
    """

    def __init__(self, size: int, init_sigma=(2.0, 2.0), init_angle: float = 0.0, padding: str = "symmetric"):
        if size % 2 == 0:
            raise ValueError(f"kernel size must be odd, got {size}")
        sig = init_sigma if isinstance(init_sigma, (list, tuple)) else (init_sigma, init_sigma)
        if min(sig) <= 0:
            raise ValueError(f"Gaussian kernel stds must be > 0, got {init_sigma}")
        nn.Module.__init__(self)
        if padding not in ("symmetric", "circular"):
            raise ValueError(f"padding must be symmetric or circular, got {padding!r}")
        self.padding = padding
        self.size = size
        self.log_sigma = nn.Parameter(torch.log(torch.tensor([float(s) for s in sig])))
        self.angle = nn.Parameter(torch.tensor(math.radians(init_angle)))  # radians

    def kernel(self) -> torch.Tensor:
        r = (self.size - 1) // 2
        c = torch.arange(-r, r + 1, dtype=self.log_sigma.dtype, device=self.log_sigma.device)
        y, x = torch.meshgrid(c, c, indexing="ij")
        cos, sin = torch.cos(self.angle), torch.sin(self.angle)
        u, v = cos * y + sin * x, -sin * y + cos * x
        s = torch.exp(self.log_sigma)
        k = torch.exp(-0.5 * ((u / s[0]) ** 2 + (v / s[1]) ** 2))
        return k / k.sum()

    def raw(self) -> torch.Tensor:
        return self.kernel()


def make_kernel_model(kind: str, size: int, init_sigma: float = 2.0, padding: str = "symmetric") -> Blur:
    """'direct' (size^2 parameters) or 'gaussian' (3 parameters), both starting as an isotropic Gaussian."""
    if kind == "direct":
        return DirectKernel(size, init_sigma, padding)
    if kind == "gaussian":
        return GaussianKernel(size, (init_sigma, init_sigma), 0.0, padding)
    raise ValueError(f"unknown kernel model {kind!r}; choose direct or gaussian")


# ---------------------------------------------------------------------------------------- kernel moments
def _grid(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates (Y, X) of a 2D kernel, each (size_y, size_x), origin at index 0."""
    iy = torch.arange(k.shape[0], dtype=k.dtype, device=k.device)
    ix = torch.arange(k.shape[1], dtype=k.dtype, device=k.device)
    return torch.meshgrid(iy, ix, indexing="ij")


def centre_of_mass(k: torch.Tensor) -> torch.Tensor:
    """(2,) centre of mass (Y, X) of a 2D kernel in pixels from index (0, 0). Raises on a zero sum."""
    total = k.sum()
    if float(total.detach()) == 0:
        raise ValueError("a kernel of sum 0 has no centre of mass")
    y, x = _grid(k)
    return torch.stack([(k * y).sum(), (k * x).sum()]) / total


def second_moments(k: torch.Tensor) -> torch.Tensor:
    """(2, 2) covariance (pixels^2) of a 2D kernel read as a distribution (weights k / sum k)."""
    m = centre_of_mass(k)
    y, x = _grid(k)
    d = torch.stack([y - m[0], x - m[1]])  # (2, Y, X)
    w = k / k.sum()
    return torch.einsum("iyx,jyx,yx->ij", d, d, w)


def gaussian_like(k: torch.Tensor, floor: float = 0.05) -> torch.Tensor:
    """The sampled Gaussian of k's own centre of mass and second moments, sum 1, shape of k.

    Eigenvalues of the covariance are floored at `floor` px^2 so a kernel with negative pixels
    (whose covariance may not be positive definite) still gives a Gaussian.
    """
    m = centre_of_mass(k)
    evals, evecs = torch.linalg.eigh(second_moments(k))
    inv = evecs @ torch.diag(1.0 / evals.clamp_min(floor)) @ evecs.T
    y, x = _grid(k)
    d = torch.stack([y - m[0], x - m[1]])
    g = torch.exp(-0.5 * torch.einsum("iyx,ij,jyx->yx", d, inv, d))
    return g / g.sum()


# ---------------------------------------------------------------------------------------- regularisers
def sparsity(k: torch.Tensor) -> torch.Tensor:
    """mean |k| (for a kernel of sum 1 it exceeds 1 / k.numel() only through negative pixels)."""
    return k.abs().mean()


def centring(k: torch.Tensor) -> torch.Tensor:
    """Squared distance (px^2) of k's centre of mass from the kernel centre, index (size - 1) / 2."""
    centre = torch.tensor([(n - 1) / 2 for n in k.shape], dtype=k.dtype, device=k.device)
    return ((centre_of_mass(k) - centre) ** 2).sum()


def sum_to_one(raw: torch.Tensor) -> torch.Tensor:
    """(sum raw - 1)^2 of the unnormalised kernel."""
    return (raw.sum() - 1) ** 2


def gaussianity(k: torch.Tensor) -> torch.Tensor:
    """sum (k - g)^2 with g = `gaussian_like(k)` held fixed: pulls k toward the Gaussian of its own
    moments rather than moving the moments (g is a target, as a fitted Gaussian is)."""
    return ((k - gaussian_like(k.detach())) ** 2).sum()


def regularisers(model: Blur) -> dict[str, torch.Tensor]:
    """Each regulariser of `model`'s kernel (a model with `kernel()` and `raw()`), scalar tensors."""
    k = model.kernel()
    return {"sparsity": sparsity(k), "centring": centring(k), "sum_to_one": sum_to_one(model.raw()),
            "gaussian": gaussianity(k)}


# ---------------------------------------------------------------------------------------- losses and steps
def degrade(model: Blur, x: torch.Tensor, sigma: float, generator: torch.Generator | None = None,
            gain: float = 0.0) -> torch.Tensor:
    """y_hat = A_phi(x) + s n, n ~ N(0, I), s = sqrt(sigma^2 + gain max(A_phi(x), 0)).

    x: (B, C, Y, X) in the shared intensity scale, same shape out. gain 0: the paper's white Gaussian
    noise of std sigma; gain > 0: the Gaussian approximation of Poisson-Gaussian noise (in units where
    intensity 1 is P photo-electrons, gain = 1 / P and sigma = read noise / P), whose variance follows
    the blurred signal, so the gradient also reaches phi through s.
    """
    n = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    ax = model.A(x)
    if gain:
        return ax + torch.sqrt(sigma ** 2 + gain * ax.clamp_min(0)) * n
    return ax + sigma * n


def flow_matching_loss(net: Velocity, x1: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """mean |v(x_t, t) - (x1 - eps)|^2, x_t = (1 - t) eps + t x1, t ~ U(0, 1): flow_prior's loss.

    x1: (B, C, Y, X) data samples. Returns a scalar.
    """
    eps = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    t = torch.rand(x1.shape[0], generator=generator, device=x1.device, dtype=x1.dtype)
    tt = t.view(-1, *([1] * (x1.ndim - 1)))
    xt = (1 - tt) * eps + tt * x1
    return torch.mean((net(xt, t).float() - (x1 - eps).float()) ** 2)


def matching_loss(v_ref: Velocity, v_aux: Velocity, y1: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """L_DI = mean(stopgrad(v_aux(y_t, t) - v_ref(y_t, t)) * y1), y_t = (1 - t) eps + t y1.

    y1: (B, C, Y, X) = A_phi(x) + sigma n, carrying the graph to phi. The networks see y_t detached
    and run without autograd, so the gradient reaches phi through the factor y1 alone (the authors'
    DiffInstruct-on-Y loss). Returns a scalar.
    """
    eps = torch.randn(y1.shape, generator=generator, device=y1.device, dtype=y1.dtype)
    t = torch.rand(y1.shape[0], generator=generator, device=y1.device, dtype=y1.dtype)
    tt = t.view(-1, *([1] * (y1.ndim - 1)))
    with torch.no_grad():
        yt = (1 - tt) * eps + tt * y1.detach()
        diff = v_aux(yt, t) - v_ref(yt, t)
    return torch.mean(diff.to(y1.dtype) * y1)


def kernel_loss(model: Blur, v_ref: Velocity, v_aux: Velocity, x: torch.Tensor, sigma: float,
                weights: dict[str, float] | None = None, generator: torch.Generator | None = None,
                gain: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """L_DI on y1 = A_phi(x) + sigma n plus sum_i weights[i] * regulariser_i, and each part as a float.

    x: clean images (B, C, Y, X). weights: any of REGULARISERS (missing ones are 0; an unknown name
    raises ValueError). gain: see `degrade`.
    """
    weights = dict(weights or {})
    unknown = set(weights) - set(REGULARISERS)
    if unknown:
        raise ValueError(f"unknown regulariser(s) {sorted(unknown)}; known: {REGULARISERS}")
    y1 = degrade(model, x, sigma, generator, gain)
    total = matching_loss(v_ref, v_aux, y1, generator)
    parts = {"matching": float(total.detach())}
    for name, value in regularisers(model).items():
        parts[name] = float(value.detach())
        if weights.get(name, 0.0):
            total = total + weights[name] * value
    return total, parts


def kernel_step(model: Blur, optimizer: torch.optim.Optimizer, v_ref: Velocity, v_aux: Velocity,
                x: torch.Tensor, sigma: float, weights: dict[str, float] | None = None,
                generator: torch.Generator | None = None, gain: float = 0.0) -> dict[str, float]:
    """One optimizer step of the kernel parameters on `kernel_loss`; returns its parts."""
    optimizer.zero_grad(set_to_none=True)
    loss, parts = kernel_loss(model, v_ref, v_aux, x, sigma, weights, generator, gain)
    loss.backward()
    optimizer.step()
    return parts


def aux_step(v_aux: nn.Module, optimizer: torch.optim.Optimizer, model: Blur, x: torch.Tensor, sigma: float,
             generator: torch.Generator | None = None, gain: float = 0.0) -> float:
    """One flow-matching step of v_aux on y_hat = A_phi(x) + noise (phi frozen: y_hat detached)."""
    with torch.no_grad():
        y_hat = degrade(model, x, sigma, generator, gain)
    optimizer.zero_grad(set_to_none=True)
    loss = flow_matching_loss(v_aux, y_hat, generator)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def flow_step(net: nn.Module, optimizer: torch.optim.Optimizer, x1: torch.Tensor,
              generator: torch.Generator | None = None) -> float:
    """One stage-1 flow-matching step of `net` on data x1 (B, C, Y, X); returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = flow_matching_loss(net, x1, generator)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def step_generator(seed: int, step: int, device="cpu") -> torch.Generator:
    """The generator of step `step`: a pure function of (seed, step), so a resumed run draws the same noise."""
    g = torch.Generator(device=device)
    g.manual_seed(int(hashlib.sha256(f"ddm4ip:{seed}:{step}".encode()).hexdigest()[:15], 16))
    return g


# ---------------------------------------------------------------------------------------- stage 2 state
class KernelLearner:
    """Stage 2: frozen v_ref, trainable v_aux (a copy of v_ref) and kernel model, with one Adam each.

    v_ref, v_aux: networks called as net(x, t) (the project's UNet with in_channels = out_channels = 1).
    `step(x_aux, x_kernel)` takes one aux step on clean batch x_aux then one kernel step on clean
    batch x_kernel, each (B, C, Y, X) (noise std sigma, plus gain times the blurred signal as variance:
    `degrade`); its noise comes from `step_generator(seed, step)`, so
    `state_dict` / `load_state_dict` (networks, kernel, both optimizers, step count) resume exactly.
    """

    def __init__(self, v_ref: nn.Module, kernel: Blur, sigma: float, weights: dict[str, float] | None = None,
                 lr_kernel: float = 1e-3, lr_aux: float = 1e-4, seed: int = 0, gain: float = 0.0):
        self.v_ref = v_ref.requires_grad_(False).eval()
        self.v_aux = copy.deepcopy(v_ref).requires_grad_(True).train()
        self.kernel = kernel
        self.sigma, self.weights, self.seed, self.gain = float(sigma), dict(weights or {}), seed, float(gain)
        self.opt_aux = torch.optim.Adam(self.v_aux.parameters(), lr=lr_aux, betas=BETAS)
        self.opt_kernel = torch.optim.Adam(kernel.parameters(), lr=lr_kernel, betas=BETAS)
        self.steps = 0

    def step(self, x_aux: torch.Tensor, x_kernel: torch.Tensor) -> dict[str, float]:
        g = step_generator(self.seed, self.steps, x_aux.device)
        aux = aux_step(self.v_aux, self.opt_aux, self.kernel, x_aux, self.sigma, g, self.gain)
        parts = kernel_step(self.kernel, self.opt_kernel, self.v_ref, self.v_aux, x_kernel, self.sigma,
                            self.weights, g, self.gain)
        self.steps += 1
        return {"aux": aux, **parts}

    def state_dict(self) -> dict:
        return {"v_aux": self.v_aux.state_dict(), "kernel": self.kernel.state_dict(),
                "opt_aux": self.opt_aux.state_dict(), "opt_kernel": self.opt_kernel.state_dict(),
                "steps": self.steps, "seed": self.seed, "sigma": self.sigma, "weights": dict(self.weights),
                "gain": self.gain}

    def load_state_dict(self, state: dict) -> None:
        self.v_aux.load_state_dict(state["v_aux"])
        self.kernel.load_state_dict(state["kernel"])
        self.opt_aux.load_state_dict(state["opt_aux"])
        self.opt_kernel.load_state_dict(state["opt_kernel"])
        self.steps, self.seed = int(state["steps"]), int(state["seed"])
        self.sigma, self.weights, self.gain = float(state["sigma"]), dict(state["weights"]), float(state["gain"])


# ---------------------------------------------------------------------------------------- kernel score
def fourier_shift(k: torch.Tensor, shift) -> torch.Tensor:
    """k (Y, X) moved by `shift` (dy, dx) pixels, sub-pixel, by a phase ramp (circular on k's grid)."""
    fy = torch.fft.fftfreq(k.shape[0], dtype=torch.float64, device=k.device)
    fx = torch.fft.fftfreq(k.shape[1], dtype=torch.float64, device=k.device)
    ramp = torch.exp(-2j * math.pi * (fy[:, None] * float(shift[0]) + fx[None, :] * float(shift[1])))
    return torch.fft.ifft2(torch.fft.fft2(k.to(torch.float64)) * ramp).real.to(k.dtype)


def kernel_error(k_hat: torch.Tensor, k_true: torch.Tensor, align: str = "fourier") -> float:
    """||k_hat_aligned - k_true||_1 / ||k_true||_1 with k_hat moved so its centre of mass meets k_true's.

    Both (Y, X), same shape (ValueError otherwise); a PSF is defined up to a shift, which is a shift
    of the restored image. align: 'fourier' (sub-pixel phase ramp) or 'round' (whole pixels). Both
    kernels are zero-padded by half their size first so the shift does not wrap content around.
    """
    k_hat, k_true = torch.as_tensor(k_hat, dtype=torch.float64), torch.as_tensor(k_true, dtype=torch.float64)
    if k_hat.shape != k_true.shape or k_hat.ndim != 2:
        raise ValueError(f"kernel_error needs two 2D kernels of one shape, got {tuple(k_hat.shape)} and "
                         f"{tuple(k_true.shape)}")
    pad = (k_true.shape[1] // 2, k_true.shape[1] // 2, k_true.shape[0] // 2, k_true.shape[0] // 2)
    k_hat, k_true = torch.nn.functional.pad(k_hat, pad), torch.nn.functional.pad(k_true, pad)
    d = centre_of_mass(k_true) - centre_of_mass(k_hat)
    if align == "round":
        moved = torch.roll(k_hat, (int(torch.round(d[0])), int(torch.round(d[1]))), dims=(0, 1))
    elif align == "fourier":
        moved = fourier_shift(k_hat, d)
    else:
        raise ValueError(f"align must be fourier or round, got {align!r}")
    return float((moved - k_true).abs().sum() / k_true.abs().sum())
