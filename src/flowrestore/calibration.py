"""Check, and correct, how well the predicted per-pixel standard deviation matches the real error.

A guided-CFM model draws K posterior samples per pixel; their spread (`std`) is its claim of how
wrong the MMSE estimate may be. Calibration compares that claim with the real error on held-out
acquisitions (all in the network's normalised units):

    std_norm   = std / (input_high - input_low)
    error      = mmse_norm - target_norm

Pixels are grouped into quantile bins of predicted std (bin edges from the fit split). Per bin
RMV = sqrt(mean(std^2)) is the error the model predicts and RMSE = sqrt(mean(error^2)) the error
it makes; a calibrated model has RMV = RMSE in every bin. The uncertainty calibration error

    UCE = mean over bins |RMV - RMSE| / mean over bins RMSE

is 0 for a perfectly calibrated model (relative, so comparable between data sets).

A calibration method is fitted on one split (val) and judged on another (test): `fit` returns the
fitted `Calibration` (with its in-sample numbers, labelled as such), and `judge` refuses to judge a
calibration on the split or the acquisitions it was fitted on. Methods live in `METHODS`: adding
one (an isotonic map, a small-K correction of the std estimate) is one fit and one apply function.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
import zarr

from .atomic import write_text
from .errors import InputError
from .evaluate import TestPair, check_shape, load_image, normalised, prediction_info, prediction_norm

log = logging.getLogger(__name__)

FIT_SPLIT = "val"
JUDGE_SPLIT = "test"
BIN_COLUMNS = ["split", "bin", "lower", "upper", "rmv", "rmse", "count", "calibrated_rmv"]


class CalibrationLeak(ValueError):
    """A calibration asked to be judged on data it was fitted on (an optimistic, dishonest number)."""


# ----------------------------------------------------------------------------- pixels


@dataclass(frozen=True)
class Pixels:
    """Predicted std and error of (a subsample of) the pixels of one split, normalised units."""

    split: str
    acquisitions: tuple[str, ...]
    std: np.ndarray
    error: np.ndarray
    samples: int = 0  # K posterior samples behind each std (for small-K corrections)

    def __post_init__(self):
        if self.std.shape != self.error.shape or self.std.ndim != 1:
            raise ValueError(f"std {self.std.shape} and error {self.error.shape} must be 1D and of equal length")


def collect(pairs: list[TestPair], predict_dir, model: str, split: str, max_pixels: int = 4_000_000,
            seed: int = 0) -> Pixels:
    """Pool the std and error of every pixel of `pairs` (at most `max_pixels`, drawn evenly from each image)."""
    if not pairs:
        raise InputError(None, f"no {split} acquisitions to calibrate {model} on",
                         f"hold out acquisitions for the {split} split (data.split.{split})")
    per_image = max(1, math.ceil(max_pixels / len(pairs)))
    stds, errors, samples = [], [], set()
    for i, pair in enumerate(pairs):
        path = os.path.join(predict_dir, model, f"{pair.acquisition}.ome.zarr")
        info = prediction_info(path)
        if "std" not in info.get("channels", []):
            raise InputError(path, "has no std channel (it is not a guided_cfm prediction)",
                             f"calibrate only guided_cfm models; model {model} is configured as something else")
        target = load_image(pair.target_path)
        check_shape(path, info["shape"], pair.target_path, target.shape)
        group = zarr.open_group(str(path), mode="r")
        channels = info["channels"]
        mmse = np.asarray(group["0"][channels.index("mmse")], dtype=np.float32)
        std = np.asarray(group["0"][channels.index("std")], dtype=np.float32)
        if not (np.isfinite(mmse).all() and np.isfinite(std).all()):
            raise InputError(path, "has NaN or infinite pixels (an incompletely restored prediction?)",
                             "delete it and rerun the predict rule for it")
        low, high = prediction_norm(info, pair)
        std_n = (std / np.float32(high - low)).ravel()
        err = (normalised(mmse, low, high) - normalised(target, *pair.target_norm)).ravel()
        if std_n.size > per_image:
            keep = np.random.default_rng([seed, i]).choice(std_n.size, per_image, replace=False)
            std_n, err = std_n[keep], err[keep]
        stds.append(std_n)
        errors.append(err)
        samples.add(int(info.get("sampling", {}).get("samples", 0)))
    return Pixels(split, tuple(p.acquisition for p in pairs), np.concatenate(stds), np.concatenate(errors),
                  min(samples) if samples else 0)


# ----------------------------------------------------------------------------- bins and UCE


def quantile_edges(std: np.ndarray, bins: int = 20) -> np.ndarray:
    """Edges of `bins` equally populated bins of std (fewer when many stds are equal)."""
    edges = np.unique(np.quantile(np.asarray(std, np.float64), np.linspace(0, 1, bins + 1)))
    if edges.size == 1:  # every std equal: one bin
        edges = np.array([edges[0], edges[0]])
    return edges


def assign(std: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each std; values outside the edges (another split) go to the first/last bin."""
    return np.searchsorted(edges[1:-1], std, side="right")


def bin_table(split: str, std: np.ndarray, error: np.ndarray, edges: np.ndarray,
              calibrated: np.ndarray | None = None) -> pd.DataFrame:
    """Per bin: RMV (root mean predicted variance), RMSE, pixel count, and the RMV after calibration."""
    n_bins = len(edges) - 1
    index = assign(std, edges)
    count = np.bincount(index, minlength=n_bins)

    def root_mean(values):
        sums = np.bincount(index, weights=np.asarray(values, np.float64) ** 2, minlength=n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(sums / count)

    table = pd.DataFrame({"split": split, "bin": np.arange(n_bins), "lower": edges[:-1], "upper": edges[1:],
                          "rmv": root_mean(std), "rmse": root_mean(error), "count": count,
                          "calibrated_rmv": root_mean(calibrated) if calibrated is not None else np.nan})
    return table


def error_ratio(bins: pd.DataFrame) -> float | None:
    """RMSE of the highest-std bin over that of the lowest: how well the std ranks pixels by error.

    1 means the std carries no per-pixel information (a constant would do as well) even when the
    UCE after calibration is small; a calibrated *and* informative std has UCE ~ 0 and a ratio >> 1.
    """
    good = bins[bins["count"] > 0]
    if len(good) < 2 or not good["rmse"].iloc[0] > 0:
        return None
    return float(good["rmse"].iloc[-1] / good["rmse"].iloc[0])


def uce(rmv, rmse) -> float | None:
    """mean_b |RMV_b - RMSE_b| / mean_b RMSE_b over the non-empty bins; None when undefined (no error at all)."""
    rmv, rmse = np.asarray(rmv, np.float64), np.asarray(rmse, np.float64)
    keep = np.isfinite(rmv) & np.isfinite(rmse)
    if not keep.any() or not rmse[keep].mean() > 0:
        return None
    return float(np.abs(rmv[keep] - rmse[keep]).mean() / rmse[keep].mean())


# ----------------------------------------------------------------------------- methods


class Method(NamedTuple):
    """fit(pixels, bins table of the fit split) -> params; apply(params, std) -> calibrated std."""

    fit: Callable[[Pixels, pd.DataFrame], dict]
    apply: Callable[[dict, np.ndarray], np.ndarray]
    description: str


def fit_linear(pixels: Pixels, bins: pd.DataFrame) -> dict:
    """Least squares RMSE ~ a * RMV + b over the non-empty bins (a scale-only fit if there is one bin)."""
    good = bins[bins["count"] > 0]
    x, y = good["rmv"].to_numpy(np.float64), good["rmse"].to_numpy(np.float64)
    if len(good) >= 2 and np.ptp(x) > 0:
        a, b = np.polyfit(x, y, 1)
    elif x.size and x.mean() > 0:
        a, b = y.mean() / x.mean(), 0.0
    else:  # no spread predicted at all: the best constant std is the RMSE
        a, b = 1.0, float(y.mean()) if y.size else 0.0
    if a <= 0:
        log.warning("linear calibration has slope a=%.3g <= 0: the predicted std does not rise with the error", a)
    return {"a": float(a), "b": float(b)}


def apply_linear(params: dict, std: np.ndarray) -> np.ndarray:
    return np.maximum(params["a"] * np.asarray(std) + params["b"], 0.0)


METHODS: dict[str, Method] = {
    "linear": Method(fit_linear, apply_linear, "calibrated std = a * std + b, a and b fitted on the validation bins"),
}


# ----------------------------------------------------------------------------- fit and judge


@dataclass(frozen=True)
class Judgement:
    split: str
    uce_before: float | None
    uce_after: float | None
    bins: pd.DataFrame = field(repr=False)
    in_sample: bool = False  # True: judged on the data it was fitted on (optimistic)


@dataclass(frozen=True)
class Calibration:
    method: str
    params: dict
    fit_split: str
    fit_acquisitions: tuple[str, ...]
    edges: tuple[float, ...]

    def apply(self, std: np.ndarray) -> np.ndarray:
        return METHODS[self.method].apply(self.params, std)


def _judgement(calibration: Calibration, pixels: Pixels, in_sample: bool) -> Judgement:
    edges = np.asarray(calibration.edges)
    table = bin_table(pixels.split, pixels.std, pixels.error, edges, calibration.apply(pixels.std))
    good = table[table["count"] > 0]
    return Judgement(pixels.split, uce(good["rmv"], good["rmse"]), uce(good["calibrated_rmv"], good["rmse"]),
                     table, in_sample)


def fit(pixels: Pixels, method: str = "linear", bins: int = 20) -> tuple[Calibration, Judgement]:
    """Fit `method` on `pixels`; returns the calibration and its in-sample judgement (labelled in_sample)."""
    if method not in METHODS:
        raise InputError(None, f"calibrate.method {method!r} is unknown", f"use one of {sorted(METHODS)}")
    edges = quantile_edges(pixels.std, bins)
    table = bin_table(pixels.split, pixels.std, pixels.error, edges)
    params = METHODS[method].fit(pixels, table)
    calibration = Calibration(method, params, pixels.split, tuple(pixels.acquisitions), tuple(map(float, edges)))
    return calibration, _judgement(calibration, pixels, in_sample=True)


def judge(calibration: Calibration, pixels: Pixels) -> Judgement:
    """UCE before and after `calibration` on held-out pixels; refuses the split/acquisitions it was fitted on."""
    if pixels.split == calibration.fit_split:
        raise CalibrationLeak(f"calibration was fitted on the {calibration.fit_split} split and cannot be judged on it; "
                              "judge it on another split (test)")
    shared = sorted(set(pixels.acquisitions) & set(calibration.fit_acquisitions))
    if shared:
        raise CalibrationLeak(f"acquisitions {shared} were used to fit the calibration and cannot judge it")
    return _judgement(calibration, pixels, in_sample=False)


# ----------------------------------------------------------------------------- the rule


def calibrate_model(model: str, val_pairs: list[TestPair], test_pairs: list[TestPair], predict_dir,
                    method: str = "linear", bins: int = 20, max_pixels: int = 4_000_000) -> tuple[dict, pd.DataFrame]:
    """Fit on val, judge on test; returns the JSON summary and the bins table of both splits."""
    val = collect(val_pairs, predict_dir, model, FIT_SPLIT, max_pixels)
    test = collect(test_pairs, predict_dir, model, JUDGE_SPLIT, max_pixels)
    calibration, on_val = fit(val, method, bins)
    on_test = judge(calibration, test)
    summary = {
        "model": model,
        "method": method,
        "description": METHODS[method].description,
        **calibration.params,
        "params": calibration.params,
        "fit_split": calibration.fit_split,
        "uce_val_before": on_val.uce_before,
        "uce_val_after": on_val.uce_after,
        "uce_val_after_is_in_sample": True,
        "uce_test_before": on_test.uce_before,
        "uce_test_after": on_test.uce_after,
        "error_ratio_val": error_ratio(on_val.bins),
        "error_ratio_test": error_ratio(on_test.bins),
        "bins": len(calibration.edges) - 1,
        "bin_edges": list(calibration.edges),
        "units": "normalised intensity (target percentiles 0.1-99.9 span 0-1)",
        "samples": val.samples,
        "val": {"acquisitions": list(val.acquisitions), "pixels": int(val.std.size)},
        "test": {"acquisitions": list(test.acquisitions), "pixels": int(test.std.size)},
    }
    table = pd.concat([on_val.bins, on_test.bins], ignore_index=True)[BIN_COLUMNS]
    return summary, table


def write_results(summary: dict, table: pd.DataFrame, json_path, bins_path) -> None:
    from .evaluate import write_tsv

    write_text(json_path, json.dumps(summary, indent=1, allow_nan=False) + "\n")
    write_tsv(table, bins_path)


__all__ = ["Pixels", "Calibration", "Judgement", "CalibrationLeak", "METHODS", "Method", "collect", "fit", "judge",
           "uce", "error_ratio", "bin_table", "quantile_edges", "calibrate_model", "write_results"]
