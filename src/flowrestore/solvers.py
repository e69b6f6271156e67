"""ODE solvers for dx/dt = v(t, x) from t=0 to t=1, counted in function evaluations (NFE).

`step` is exposed on its own so the predict engine can blend the velocity of overlapping tiles
at every step (EM Generalist stitching) as well as integrate tiles independently.
"""

from __future__ import annotations

from typing import Callable

import torch

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SOLVERS = ("euler", "heun")


def time_grid(solver: str, nfe: int) -> list[float]:
    """Step boundaries: Euler makes nfe steps; Heun makes nfe // 2 steps of two evaluations."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
    steps = nfe if solver == "euler" else max(1, nfe // 2)
    return [i / steps for i in range(steps + 1)]


def step(solver: str, field: Field, x: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    h = t1 - t0
    t = torch.full((x.shape[0],), t0, device=x.device, dtype=x.dtype)
    v0 = field(t, x)
    if solver == "euler":
        return x + h * v0
    # Heun (trapezoidal predictor-corrector): second order for one extra evaluation.
    x_pred = x + h * v0
    v1 = field(torch.full_like(t, t1), x_pred)
    return x + 0.5 * h * (v0 + v1)


def integrate(solver: str, field: Field, x0: torch.Tensor, nfe: int) -> torch.Tensor:
    grid = time_grid(solver, nfe)
    x = x0
    for t0, t1 in zip(grid[:-1], grid[1:]):
        x = step(solver, field, x, t0, t1)
    return x
