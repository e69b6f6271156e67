from __future__ import annotations

from typing import Callable

import torch
from torch import nn

METHODS: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> "Method":
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]()


class Method:
    """A restoration x1 ~ p(x1 | y) by integrating dx/dt = velocity(t, x, y) from t=0 to t=1.

    `stochastic` methods start from x0 ~ N(0, I) and give a different sample per noise draw;
    the others start from zeros and need one solver step.
    """

    name: str = ""
    stochastic: bool = True
    time_input: bool = True

    def in_channels(self, channels: int = 1) -> int:
        return 2 * channels

    def loss(self, net: nn.Module, target: torch.Tensor, degraded: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def velocity(self, net: nn.Module, t: torch.Tensor, x: torch.Tensor, degraded: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def field(self, net: nn.Module, degraded: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda t, x: self.velocity(net, t, x, degraded)
