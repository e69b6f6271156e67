"""ODE solvers for dx/dt = v(t, x) from t=0 to t=1, counted in function evaluations (NFE).

`step` is exposed on its own so the predict engine can blend the velocity of overlapping tiles
at every step (EM Generalist stitching) as well as integrate tiles independently.

A flow model's velocity v = (E[x1 | x_t] - x_t) / (1 - t) is steepest near t = 1. Heun's corrector
samples it at the end of each step: on the default 8-NFE grid its last corrected step weighs the
network's output there by h / (2 (1 - t1)) = 2.3. The explicit midpoint rule samples it in the middle
of the step. Measured by bench/predict.py (3) on the demo (K = 8, 5 test images, seeds 0 and 1; the
reference is a converged solve, Heun at 39 evaluations): midpoint at 8 evaluations gives samples
whose mean std is 1.01-1.08x the reference's (Heun at 7: 1.22-1.37x) and an MMSE PSNR within
+0.07 dB of it (Heun: -0.04 to -0.10 dB). Midpoint is the default.
"""

from __future__ import annotations

from typing import Callable

import torch

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SOLVERS = ("euler", "heun", "midpoint")


def _plan(solver: str, nfe: int) -> tuple[str, int]:
    """The solver a budget of `nfe` really allows, and its number of steps."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
    if solver == "midpoint" and nfe < 2:  # one evaluation buys an Euler step only
        solver = "euler"
    return solver, {"euler": nfe, "heun": max(1, (nfe + 1) // 2), "midpoint": nfe // 2}[solver]


def time_grid(solver: str, nfe: int, power: float | None = None) -> list[float]:
    """Step boundaries: Euler makes nfe steps, midpoint nfe // 2, Heun (nfe + 1) // 2 with an Euler last step.

    Heun's corrector would evaluate the velocity at t = 1, where x_t = x1 carries no trace of the
    starting noise x0: the learned velocity there is E[x1 - x0 | x1] = x1, not x1 - x0, and the
    correction would leave half a step of noise in every sample. So the last step is Euler (as in
    EDM's sampler), and a Heun solve of n steps costs 2n - 1 evaluations. Midpoint evaluates at
    the start and the middle of each step, never at t = 1: n steps cost 2n.
    Steps shrink toward t = 1 (t_i = 1 - (1 - i/n)^power), where the fine detail is decided
    (`power` None: the schema's `predict.schedule`).
    """
    if power is None:
        from ..config import defaults

        power = defaults("predict")["schedule"]
    _, steps = _plan(solver, nfe)
    return [1.0 - (1.0 - i / steps) ** power for i in range(steps + 1)]


def evaluations(solver: str, nfe: int) -> int:
    """Network evaluations that a solve really makes (Heun's last step has no corrector)."""
    solver, steps = _plan(solver, nfe)
    return {"euler": steps, "heun": 2 * steps - 1, "midpoint": 2 * steps}[solver]


def _axpy(x: torch.Tensor, a: float, v: torch.Tensor) -> torch.Tensor:
    """x + a * v, rounded exactly as that expression is (a * v, then the sum), with one temporary
    instead of two: the sum is taken in place in a * v (IEEE addition commutes, so the bits agree)."""
    out = torch.mul(v, a)
    if out.dtype != x.dtype or out.shape != x.shape:  # promotion or broadcasting: the plain expression
        return x + out
    return out.add_(x)


def step(solver: str, field: Field, x: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    """One step from t0 to t1; never writes into x or into what `field` returns."""
    h = t1 - t0
    t = torch.full((x.shape[0],), t0, device=x.device, dtype=x.dtype)
    v0 = field(t, x)
    if solver == "euler" or (solver == "heun" and t1 >= 1.0):
        return _axpy(x, h, v0)
    if solver == "midpoint":
        # Explicit midpoint (RK2): second order, and never evaluates at t = 1 (see the module docstring).
        return _axpy(x, h, field(torch.full_like(t, t0 + 0.5 * h), _axpy(x, 0.5 * h, v0)))
    # Heun (trapezoidal predictor-corrector): second order for one extra evaluation.
    v1 = field(torch.full_like(t, t1), _axpy(x, h, v0))
    return _axpy(x, 0.5 * h, v0 + v1)


def integrate(solver: str, field: Field, x0: torch.Tensor, nfe: int, power: float | None = None) -> torch.Tensor:
    grid = time_grid(solver, nfe, power)
    solver, _ = _plan(solver, nfe)
    x = x0
    for t0, t1 in zip(grid[:-1], grid[1:]):
        x = step(solver, field, x, t0, t1)
    return x
