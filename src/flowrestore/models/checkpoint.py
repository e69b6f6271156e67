"""Checkpoints hold tensors and plain data only, and are loaded with `weights_only=True`:
a file that carries pickled code is refused, never executed."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from ..atomic import atomic_output
from ..errors import InputError
from ..methods import get_method
from .nets import NetConfig, UNet


# The network of a checkpoint written before these net settings existed (it names none of them).
WRITTEN_BEFORE_SETTINGS = {"norm": "group", "padding": "zeros"}


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, keys: tuple[str, ...] = ("identity", "ema")) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "checkpoint not found", "train the model first (snakemake runs rule train) or fix the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):  # not a reference to code: a damaged or foreign pickle
            raise InputError(path, "is not a readable checkpoint (its pickled data is damaged or of another kind)",
                             "the file is truncated or not a torch checkpoint; train again") from exc
        raise InputError(path, "refused: the checkpoint contains pickled code or objects, which could run arbitrary code "
                         "when loaded", "use a checkpoint written by flowrestore (tensors and plain data only)") from exc
    except Exception as exc:  # a truncated or foreign file fails anywhere in torch's reader
        raise InputError(path, f"is not a readable checkpoint ({_brief(exc)})",
                         "the file is truncated or not a torch checkpoint; train again") from exc
    if not isinstance(payload, dict) or any(k not in payload for k in keys):
        raise InputError(path, "is not a flowrestore checkpoint (no model identity or weights)",
                         "use the checkpoint.pt that rule train writes")
    return payload


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu"):
    """(method with its learned state, network with EMA weights in eval mode, identity) from a checkpoint."""
    payload = load_checkpoint(path)
    identity = payload["identity"]
    try:
        method = get_method(identity["method"], identity.get("options"), path)
        method.load_state_dict(payload.get("method_state", {}))
        net = UNet(NetConfig(**{**WRITTEN_BEFORE_SETTINGS, **identity["net"]}))
        net.load_state_dict(payload["ema"])
    except Exception as exc:  # whatever field is missing, mistyped or of another shape
        raise InputError(path, f"does not match the network it declares ({_brief(exc)})",
                         "retrain the model; the checkpoint was written by another architecture or version") from exc
    return method.to(device).eval(), net.to(device).eval().requires_grad_(False), identity


def _brief(exc: Exception, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
