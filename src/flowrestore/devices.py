"""Which torch device to run on."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> the first CUDA device when torch sees one, else the CPU; anything else as torch names it."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)
