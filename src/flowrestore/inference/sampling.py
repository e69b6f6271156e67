"""How posterior samples are drawn at prediction time (shared by planning and the engine)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SamplingConfig:
    samples: int = 16
    solver: str = "midpoint"  # see solvers.py: more accurate than Heun at the same budget
    nfe: int = 8
    schedule: float = 2.5  # step boundaries t_i = 1 - (1 - i/n)^schedule; 1 is uniform
    batch: int = 8
    group: int = 8  # samples held at once per block
    keep_samples: int = 2
    prefix_means: bool = True  # also return the mean of the first 1, 2, 4, ... samples
    stitching: str = "tile"
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA
