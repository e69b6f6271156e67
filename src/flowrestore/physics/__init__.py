"""Forward models shared by the simulator and the methods: linear operators with their adjoints
(identity, blur, lateral and axial down-sampling) and noise models.

Every operator is a `torch.nn.Module` with `A(x)`; a `LinearOperator` adds `A_adjoint(y)`.
Parameters (a PSF, a learnable kernel) are buffers or parameters, so they travel in `state_dict`.
Registering an operator in `OPERATORS` (or a noise model in `NOISE_MODELS`) puts it under the
property tests of tests/test_physics.py (adjointness in float64; mean and variance of the noise).
"""

from .base import LinearOperator, Operator, adjointness_error  # noqa: F401
from .compose import Compose  # noqa: F401
from .blur import Blur, GaussianBlur, LearnableBlur, gaussian_kernel  # noqa: F401
from .downsample import AreaDownsample, AxialDownsample  # noqa: F401
from .identity import Identity  # noqa: F401
from .noise import BinomialThinning, GaussianNoise, NoiseModel, PoissonGaussian  # noqa: F401

# name -> a small example instance for the property tests, per dimensionality
OPERATORS = {
    "identity": lambda dims: Identity(),
    "gaussian_blur": lambda dims: GaussianBlur(1.5, dims=dims),
    "anisotropic_blur": lambda dims: GaussianBlur([2.5, 1.5][-dims:] if dims == 2 else [1.0, 2.5, 1.5], dims=dims,
                                                  angle=30.0),
    "psf_blur": lambda dims: Blur(_example_psf(dims)),
    "learnable_blur": lambda dims: LearnableBlur(5, dims=dims),
    "area_downsample": lambda dims: AreaDownsample(2, dims=dims),
    "axial_downsample": lambda dims: AxialDownsample(2) if dims == 3 else None,
    "blur_then_area": lambda dims: Compose([GaussianBlur(1.0, dims=dims), AreaDownsample(2, dims=dims)]),
}
NOISE_MODELS = {
    "gaussian": lambda: GaussianNoise(0.3),
    "poisson_gaussian": lambda: PoissonGaussian(gain=2.0, offset=100.0, read_noise=3.0),
    "binomial_thinning": lambda: BinomialThinning(0.4),
}


def _example_psf(dims: int):
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.rand((5,) * dims, generator=g, dtype=torch.float64) + 0.1  # deliberately not symmetric
