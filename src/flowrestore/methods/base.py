"""What a restoration method is, as the rest of the package sees it.

A method turns a network (and, for some, learned state such as a blur kernel) into a training loss
and a sampler. Training, the predict engine, evaluation, calibration and the workflow ask it what
it is through the attributes below; none of them tests its name.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..config import settings

METHODS: dict[str, type["Method"]] = {}
DATA_KINDS = ("paired", "targets", "inputs", "unpaired")
STARTS = ("noise", "zeros", "degraded")


def register(cls: type["Method"]) -> type["Method"]:
    if cls.data not in DATA_KINDS or cls.start not in STARTS:
        raise ValueError(f"method {cls.name}: data must be one of {DATA_KINDS} and start one of {STARTS}")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type["Method"]:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]


def get_method(name: str, options: dict | None = None, source=None) -> "Method":
    """The method `name` built from its settings (`models.<model>.options` in the config).

    An unknown option raises an InputError naming `source` and the closest known option.
    """
    return method_class(name)(options, source)


class Method(nn.Module):
    """A restoration x1 ~ p(x1 | y), sampled by integrating dx/dt = velocity(t, x, y) from t = 0 to 1.

    Declarations (class attributes):
    - `stochastic`: samples differ with the noise draw (posterior samples, MMSE, std); otherwise
      one deterministic pass gives the estimate.
    - `data`: what training reads: "paired" (input, target), "targets" (the target role only: clean
      images, or noisy references of mixed quality for a method that makes its own noisier copies;
      the input role is not read, so it need not exist), "inputs" (degraded images only) or
      "unpaired" (two sets).
    - `start`: the state at t = 0: "noise" (N(0, I), keyed to the voxel position), "zeros", or
      "degraded" (the input itself, on the output grid).
    - `time_input`: the network takes t.
    - `needs_grad`: sampling differentiates (through the network or an operator), so the engine
      keeps autograd on.
    - `measurement`: the sampler applies a forward operator to its state itself (plug-and-play), so
      the engine passes `integrate` the input `y` and a keyed `noise(step)` for fresh noise per step.
    - `net_norm`: what `net.norm: auto` means for this method (channel: the output does not depend
      on predict.tile).
    Learned state (a kernel) lives in submodules/parameters of the method, so it is saved in the
    checkpoint's `method_state` and restored with `weights_only=True`.
    """

    name: str = ""
    stochastic: bool = True
    data: str = "paired"
    start: str = "noise"
    time_input: bool = True
    needs_grad: bool = False
    measurement: bool = False
    net_norm: str = "channel"

    def __init__(self, options: dict | None = None, source=None):
        super().__init__()
        self.options = settings(f"$defs.methods.{self.name}", options, source)

    def in_channels(self, channels: int = 1) -> int:
        """Network input channels for images of `channels` channels."""
        return 2 * channels

    def normalization(self):
        """The one intensity scale the network works in (a `Normalization` of raw units), or None.

        None (the default): each image is normalised by its own percentiles. A method whose operators
        need raw units (photon counts) gives one scale for every image, inputs and targets alike;
        training and prediction then use it instead of the percentiles.
        """
        return None

    def schedule(self, step: int, total: int) -> None:
        """Called by training before the loss of `step` (of `total`): a curriculum is a pure function of
        both, so resuming at any step is exact. Validation is computed at step = total."""

    def grid_factor(self, dims: int) -> tuple[int, ...]:
        """Per axis, output voxels per input voxel (1: the output is on the input's grid)."""
        return (1,) * dims

    def net_dims(self, dims: int) -> int:
        """Spatial axes of the network for images of `dims` axes (fewer: the method cuts the image into planes)."""
        return dims

    def patch_shape(self, patch: tuple[int, ...]) -> tuple[int, ...]:
        """The training patch read from the images, given train.patch_size per image axis."""
        return patch

    def loss(self, net: nn.Module, target: torch.Tensor, degraded: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Scalar training loss on a batch: target, degraded of shape (batch, channels, *patch)."""
        raise NotImplementedError

    def velocity(self, net: nn.Module, t: torch.Tensor, x: torch.Tensor, degraded: torch.Tensor) -> torch.Tensor:
        """dx/dt at times t (batch,) for states x and inputs `degraded`, both (batch, channels, *tile)."""
        raise NotImplementedError

    def integrate(self, field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
                  sampling) -> torch.Tensor:
        """x at t = 1 from x0 under `field(t, x)`: the method's time grid and solver (predict settings)."""
        from ..inference import solvers

        return solvers.integrate(sampling.solver, field, x0, sampling.nfe, sampling.schedule)

    def state_count(self) -> int:
        """How many states `states` returns: 1, or one per step of a method with a short fixed grid."""
        return 1

    def states(self, field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
               sampling) -> list[torch.Tensor]:
        """The states after each step worth keeping, the last being `integrate`'s result (state_count of them)."""
        return [self.integrate(field, x0, sampling)]

    def field(self, net: nn.Module, degraded: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda t, x: self.velocity(net, t, x, degraded)

    def identity(self) -> dict:
        """What a checkpoint records of the method: its name, declarations and options."""
        found = {"method": self.name, "stochastic": self.stochastic, "options": dict(self.options)}
        norm = self.normalization()
        return found if norm is None else found | {"normalization": {"low": norm.low, "high": norm.high}}
