"""How posterior samples are drawn at prediction time (shared by planning and the engine).

The defaults are the schema's `predict` section, the one place they are set.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..config import defaults, settings

_D = defaults("predict")


@dataclass
class SamplingConfig:
    samples: int = _D["samples"]
    solver: str = _D["solver"]  # see solvers.py
    nfe: int = _D["nfe"]
    schedule: float = _D["schedule"]  # step boundaries t_i = 1 - (1 - i/n)^schedule; 1 is uniform
    batch: int = _D["batch"]
    group: int = _D["group"]  # samples held at once per block
    keep_samples: int = _D["keep_samples"]
    prefix_means: bool = _D["prefix_means"]  # also return the mean of the first 1, 2, 4, ... samples
    stitching: str = _D["stitching"]
    seed: int = _D["seed"]
    amp: bool = _D["amp"]  # bf16 autocast on CUDA

    @classmethod
    def from_settings(cls, given: dict | None = None, source=None) -> "SamplingConfig":
        """From `predict` settings (other keys of that section are allowed; unknown ones are refused)."""
        checked = settings("predict", given, source)
        return cls(**{f.name: checked[f.name] for f in fields(cls)})
