"""Figures for training and the report; every PNG is written atomically."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..atomic import atomic_output  # noqa: E402


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


# ----------------------------------------------------------------------------- evaluation figures

INTENSITY_CMAP = "gray"
UNCERTAINTY_CMAP = "magma"


def _nice_length(target: float) -> float:
    """1, 2 or 5 times a power of ten, at most `target`."""
    import math

    if target <= 0:
        return 0.0
    power = 10 ** math.floor(math.log10(target))
    return max(m * power for m in (1, 2, 5) if m * power <= target)


def _scale_bar(ax, width_px: int, pixel_size: float) -> None:
    length = _nice_length(width_px * pixel_size / 4)
    if not length:
        return
    px = length / pixel_size
    x0 = width_px * 0.05
    ax.plot([x0, x0 + px], [width_px * 0.93] * 2, color="white", linewidth=3, solid_capstyle="butt")
    ax.text(x0 + px / 2, width_px * 0.89, f"{length:g} µm", color="white", ha="center", va="bottom", fontsize=8)


def example_crops(panels: dict, path, title: str = "", pixel_size: float | None = None) -> None:
    """One row per sampling model: input | point estimators... | sample | MMSE | std | target | |error|.

    Intensity panels share one grey scale (normalised intensity), std and |error| share one colour
    scale, so a pixel's predicted std can be read against its real error.
    """
    import numpy as np

    sampled = panels["sampled"] or {None: None}
    intensity = [panels["input"], panels["target"], *panels["point"].values()]
    for g in panels["sampled"].values():
        intensity += [v for k, v in g.items() if k in ("mmse", "sample") and v is not None]
    vmax = float(np.percentile(panels["target"], 99.8)) or 1.0
    uncertain = [v for g in panels["sampled"].values() for k, v in g.items() if k in ("std", "error") and v is not None]
    umax = max((float(np.percentile(u, 99.5)) for u in uncertain), default=1.0) or 1.0
    labels = panels.get("labels", {})
    columns = [(panels.get("input_label", "input (widefield)"), "input", None)] + [(labels.get(m, m), "point", m) for m in panels["point"]]
    if panels["sampled"]:
        columns += [("posterior sample", "sample", None), ("MMSE (sample mean)", "mmse", None),
                    ("predicted std", "std", None)]
    columns += [("target (confocal)", "target", None)]
    if panels["sampled"]:
        columns += [("|MMSE − target|", "error", None)]
    rows = list(sampled)
    size = 2.3
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(size * len(columns) + 1.2, size * len(rows) + 0.6),
                             squeeze=False, constrained_layout=True)
    im_i = im_u = None
    for r, model in enumerate(rows):
        g = panels["sampled"].get(model) if model is not None else None
        for c, (label, kind, extra) in enumerate(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if kind == "input":
                data = panels["input"]
            elif kind == "target":
                data = panels["target"]
            elif kind == "point":
                data = panels["point"][extra]
            else:
                data = g.get(kind) if g else None
            if data is None:
                ax.text(0.5, 0.5, "not stored", ha="center", va="center", transform=ax.transAxes)
                ax.set_title(label, fontsize=9)
                continue
            if kind in ("std", "error"):
                im_u = ax.imshow(data, cmap=UNCERTAINTY_CMAP, vmin=0, vmax=umax, interpolation="nearest")
            else:
                im_i = ax.imshow(data, cmap=INTENSITY_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(label, fontsize=9)
            if kind == "input" and pixel_size:
                _scale_bar(ax, data.shape[-1], pixel_size)
    if im_i is not None:
        fig.colorbar(im_i, ax=axes[:, :], shrink=0.8, pad=0.01, aspect=30).set_label("intensity (normalised)")
    if im_u is not None:
        fig.colorbar(im_u, ax=axes[:, :], shrink=0.8, pad=0.01, aspect=30).set_label("std / |error| (normalised)")
    if len(rows) > 1:
        for r, model in enumerate(rows):
            axes[r][0].set_ylabel(model, fontsize=10)
    elif rows[0] is not None:
        title = f"{title} — {rows[0]}" if title else f"{rows[0]}"
    if title:
        fig.suptitle(title)
    save(fig, path)


def calibration_curve(bins, summary: dict, path) -> None:
    """RMSE against RMV per std bin, before and after calibration, on val (fit) and test, with counts."""
    import numpy as np

    splits = [s for s in ("val", "test") if (bins["split"] == s).any()]
    fig, axes = plt.subplots(2, len(splits), figsize=(4.6 * len(splits), 6.2), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True)
    for c, split in enumerate(splits):
        t = bins[(bins["split"] == split) & (bins["count"] > 0)]
        ax = axes[0][c]
        top = float(np.nanmax(np.concatenate([t["rmv"], t["rmse"], t["calibrated_rmv"]]))) * 1.05 or 1.0
        ax.plot([0, top], [0, top], color="0.5", linestyle="--", linewidth=1, label="perfect (RMSE = RMV)")
        before, after = (summary.get(split) or {}).get("uce_before"), (summary.get(split) or {}).get("uce_after")
        fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
        ax.plot(t["rmv"], t["rmse"], "o-", color="tab:red", markersize=4, label=f"predicted std (UCE {fmt(before)})")
        ax.plot(t["calibrated_rmv"], t["rmse"], "s-", color="tab:blue", markersize=4,
                label=f"calibrated, {summary.get('method', '')} (UCE {fmt(after)})")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_aspect("equal")
        ax.set_xlabel("predicted error: RMV per bin")
        ax.set_ylabel("real error: RMSE per bin")
        name = {"val": "validation (fit here)", "test": "test (held out)"}[split]
        ax.set_title(f"{summary.get('model', '')} — {name}", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
        axc = axes[1][c]
        allb = bins[bins["split"] == split]
        axc.bar(allb["bin"], allb["count"], color="0.6")
        axc.set_xlabel("std bin (low → high predicted std)")
        axc.set_ylabel("pixels")
    save(fig, path)


def perception_distortion(curve, baselines: dict, path, frc_unit: str = "µm") -> None:
    """PSNR and FRC resolution (in `frc_unit`, see evaluate.frc_unit) vs the number of averaged
    posterior samples (log2 axis).

    `curve`: rows model, acquisition, samples, psnr, frc_1/7_um; `baselines`: {label: {"psnr": v, "frc_1/7_um": v}}
    drawn as horizontal lines (point estimators, the input).
    """
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    specs = [("psnr", "PSNR (dB) — higher is better"), ("frc_1/7_um", f"FRC resolution ({frc_unit}) — lower is finer")]
    styles = ["--", ":", "-."]
    for ax, (column, ylabel) in zip(axes, specs):
        for model, group in curve.groupby("model", sort=False):
            values = group.dropna(subset=[column]).groupby("samples")[column]
            mean, std = values.mean(), values.std(ddof=0).fillna(0)
            if len(mean):
                ax.errorbar(mean.index, mean.values, yerr=std.values, marker="o", capsize=3, label=f"{model}: mean of n samples")
        for i, (label, values) in enumerate(baselines.items()):
            v = values.get(column)
            if v is not None and np.isfinite(v):
                ax.axhline(v, color=f"C{i + 2}", linestyle=styles[i % 3], linewidth=1.2, label=label)
        ax.set_xscale("log", base=2)
        ticks = sorted(curve["samples"].unique()) if len(curve) else [1]
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.set_xlabel("posterior samples averaged (n)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    save(fig, path)
