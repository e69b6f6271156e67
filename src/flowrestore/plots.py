"""Figures for training and the report; every PNG is written atomically."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .atomic import atomic_output  # noqa: E402


def save(fig, path: str | os.PathLike) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format=os.path.splitext(str(path))[1][1:] or "png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def loss_curve(metrics: list[dict], path, title: str = "") -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = [m["step"] for m in metrics]
    ax.plot(steps, [m["loss"] for m in metrics], label="train")
    ax.plot(steps, [m["val_loss"] for m in metrics], label="validation (EMA weights)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    save(fig, path)
