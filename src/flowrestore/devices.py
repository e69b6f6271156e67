"""Which torch device to run on."""

from __future__ import annotations

import torch

from .errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" (CUDA when torch sees a GPU, else the CPU), "cpu", "cuda" or "cuda:N".

    A device that is not there is refused here, in one line, rather than by the first tensor sent to it.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(None, f"device {name!r} is not a device name", "use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(None, f"device {name!r} was asked for, but torch sees no CUDA device",
                             "use device auto or cpu, or run on a GPU node with a CUDA build of torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(None, f"device {name!r} was asked for, but torch sees {torch.cuda.device_count()} "
                             "CUDA devices", "use cuda (the first) or an index below that count")
    return device
