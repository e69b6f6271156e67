"""Check, and correct, how well the predicted per-pixel standard deviation matches the real error.

A guided-CFM model draws K posterior samples per pixel; their spread (`std_raw`) is its claim of
how wrong the MMSE estimate may be. Calibration compares that claim with the real error on
held-out acquisitions (all in the network's normalised units):

    std_norm   = std_raw / (input_high - input_low)
    error      = mmse_norm - target_norm

Pixels of a split are grouped into 20 quantile bins of its predicted std. Per bin
RMV = sqrt(mean(std^2)) is the error the model predicts and RMSE = sqrt(mean(error^2)) the error
it makes; a calibrated model has RMV = RMSE in every bin. The uncertainty calibration error

    UCE = mean over bins |RMV - RMSE| / mean over bins RMSE

is 0 for a perfectly calibrated model (relative, so comparable between data sets). Coverage is
the fraction of target pixels inside the central 68% / 95% interval, MMSE +- z * calibrated std
(Gaussian), or the samples' empirical quantiles when a prediction kept all its samples.

A calibration method is fitted on one split (val) and judged on another (test): `fit` returns the
fitted `Calibration` (with its in-sample numbers, labelled as such), and `judge` refuses to judge a
calibration on the split or the acquisitions it was fitted on. Methods live in `METHODS`, each one
fit and one apply function; the fitted calibration is stored as JSON, and prediction applies it
to new acquisitions without refitting (`predict.finalize`).
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

from ..atomic import write_text
from ..errors import InputError
from ..config import defaults
from .evaluate import TestPair, check_shape, load_image, normalised, prediction_info, prediction_norm, read_channels

_CAL = defaults("calibrate")  # the schema's, the one place defaults are set

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
    # per central interval level (0.68, 0.95): is the target inside the samples' empirical interval?
    inside: dict[float, np.ndarray] | None = field(default=None, repr=False)
    owner: np.ndarray | None = field(default=None, repr=False)  # per pixel, its index into `acquisitions`
    intensity: np.ndarray | None = field(default=None, repr=False)  # per pixel, the MMSE (normalised units)

    def __post_init__(self):
        if self.std.shape != self.error.shape or self.std.ndim != 1:
            raise ValueError(f"std {self.std.shape} and error {self.error.shape} must be 1D and of equal length")


def collect(pairs: list[TestPair], predict_dir, model: str, split: str, max_pixels: int = _CAL["max_pixels"],
            seed: int = 0) -> Pixels:
    """Pool the raw std and error of every pixel of `pairs` (at most `max_pixels`, drawn evenly from each image).

    When a prediction kept all its K samples, also whether each target pixel lies in the samples'
    central intervals (coverage without any calibration).
    """
    if not pairs:
        raise InputError(None, f"no {split} acquisitions to calibrate {model} on",
                         f"hold out acquisitions for the {split} split (data.split.{split})")
    per_image = max(1, math.ceil(max_pixels / len(pairs)))
    stds, errors, owners, intensities, inside, samples = [], [], [], [], {}, set()
    for i, pair in enumerate(pairs):
        path = os.path.join(predict_dir, model, f"{pair.acquisition}.ome.zarr")
        info = prediction_info(path)
        channels = info.get("channels", [])
        if "std_raw" not in channels:
            raise InputError(path, "has no std_raw channel (it is not the prediction of a sampling method, or of an older version)",
                             f"calibrate only models whose method draws posterior samples, and rerun predict for {model} if it is one")
        k = int(info.get("sampling", {}).get("samples", 0))
        samples.add(k)
        target = load_image(pair.target_path)
        check_shape(path, info["shape"], pair.target_path, target.shape)
        kept = [f"sample_{j}" for j in range(k)]
        wanted = ["mmse", "std_raw"] + (kept if set(kept) <= set(channels) else [])
        ch = read_channels(path, wanted)
        if not all(np.isfinite(v).all() for v in ch.values()):
            raise InputError(path, "has NaN or infinite pixels (an incompletely restored prediction?)",
                             "delete it and rerun the predict rule for it")
        # the units predict applies the calibration in: the prediction's own normalisation; a one-scale
        # model restores into the target's raw units, so its target is read on that same scale
        low, high = (info["normalization"]["low"], info["normalization"]["high"]) if info.get("normalization") \
            else prediction_norm(info, pair)
        target_n = normalised(target, low, high) if info.get("one_scale") else normalised(target, *pair.target_norm)
        std_n = (ch["std_raw"] / np.float32(high - low)).ravel()
        err = (normalised(ch["mmse"], low, high) - target_n).ravel()
        hits = {}
        if len(ch) > 2:
            _, _, hits = sample_statistics(normalised(np.stack([ch[n] for n in kept]), low, high), target_n)
        keep = slice(None)
        if std_n.size > per_image:
            keep = np.random.default_rng([seed, i]).choice(std_n.size, per_image, replace=False)
        stds.append(std_n[keep])
        errors.append(err[keep])
        owners.append(np.full(errors[-1].size, i, dtype=np.int32))
        intensities.append(normalised(ch["mmse"], low, high).ravel()[keep])
        for level, hit in hits.items():
            inside.setdefault(level, []).append(hit.ravel()[keep])
    complete = inside and all(len(v) == len(pairs) for v in inside.values())
    return Pixels(split, tuple(p.acquisition for p in pairs), np.concatenate(stds), np.concatenate(errors),
                  min(samples) if samples else 0,
                  {level: np.concatenate(v) for level, v in inside.items()} if complete else None,
                  np.concatenate(owners), np.concatenate(intensities))


def by_acquisition(pixels: Pixels) -> list[tuple[str, Pixels]]:
    """The pixels of each acquisition on its own (the spread a pooled figure hides); needs `owner`."""
    if pixels.owner is None:
        raise ValueError("these pixels do not record their acquisition (Pixels.owner)")
    out = []
    for i, name in enumerate(pixels.acquisitions):
        mine = pixels.owner == i
        inside = None if pixels.inside is None else {lv: hit[mine] for lv, hit in pixels.inside.items()}
        out.append((name, Pixels(pixels.split, (name,), pixels.std[mine], pixels.error[mine], pixels.samples,
                                 inside, np.zeros(int(mine.sum()), np.int32),
                                 None if pixels.intensity is None else pixels.intensity[mine])))
    return out


# ----------------------------------------------------------------------------- bins and UCE


def quantile_edges(std: np.ndarray, bins: int = _CAL["bins"]) -> np.ndarray:
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
    """fit(pixels, bins table of the fit split) -> params; apply(params, std[, intensity]) -> calibrated std.

    A method with `intensity` True also reads each pixel's MMSE (normalised units) when applied.
    """

    fit: Callable[[Pixels, pd.DataFrame], dict]
    apply: Callable[..., np.ndarray]
    description: str
    intensity: bool = False


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


def fit_isotonic(pixels: Pixels, bins: pd.DataFrame) -> dict:
    """A non-decreasing map RMV -> RMSE through the bins (pool-adjacent-violators, weighted by pixel count).

    Unlike the linear fit it follows a curved relation (the demo's std is too small by a factor
    that grows with the std), and being monotone it keeps the pixels' ranking by uncertainty.
    """
    from scipy.optimize import isotonic_regression

    good = bins[(bins["count"] > 0) & (bins["rmv"] > 0)]
    if good.empty:
        return fit_linear(pixels, bins) | {"x": [], "y": []}
    x = good["rmv"].to_numpy(np.float64)
    y = isotonic_regression(good["rmse"].to_numpy(np.float64), weights=good["count"].to_numpy(np.float64)).x
    return {"x": x.tolist(), "y": y.tolist()}


def apply_isotonic(params: dict, std: np.ndarray) -> np.ndarray:
    """Interpolate between the bins; beyond the first/last bin keep that bin's ratio RMSE/RMV."""
    if not params["x"]:
        return apply_linear(params, std)
    x, y, std = np.asarray(params["x"]), np.asarray(params["y"]), np.asarray(std, np.float64)
    out = np.interp(std, x, y)
    out = np.where(std < x[0], std * (y[0] / x[0]), out)
    return np.where(std > x[-1], std * (y[-1] / x[-1]), out)


def fit_isotonic_intensity(pixels: Pixels, bins: pd.DataFrame, bands: int = 4) -> dict:
    """Isotonic maps std -> error, one per band of MMSE intensity (quantile bands of the fit split).

    Why: in fluorescence the error at a given predicted std differs between background and
    structure (shot noise grows with the signal), so one std map mixes error scales, and mixed
    scales are heavy-tailed errors: a 68% interval that covers 80%. A map per intensity band keeps
    each band's scale. Bands with fewer pixels than 20 per std bin fall back to the pooled map.
    """
    if pixels.intensity is None:
        raise ValueError("calibration isotonic_intensity needs each pixel's MMSE intensity (Pixels.intensity)")
    pooled = fit_isotonic(pixels, bins)
    edges = np.unique(np.quantile(pixels.intensity, np.linspace(0, 1, bands + 1)))
    band = assign(pixels.intensity, edges) if edges.size > 1 else np.zeros(pixels.std.size, int)
    maps = []
    for b in range(max(1, edges.size - 1)):
        mine = band == b
        n_bins = len(bins)
        if mine.sum() < 20 * n_bins:
            maps.append(pooled)
            continue
        std, err = pixels.std[mine], pixels.error[mine]
        maps.append(fit_isotonic(pixels, bin_table(pixels.split, std, err, quantile_edges(std, n_bins))))
    return {"edges": edges.tolist(), "maps": maps}


def apply_isotonic_intensity(params: dict, std: np.ndarray, intensity: np.ndarray | None = None) -> np.ndarray:
    if intensity is None:
        raise ValueError("calibration isotonic_intensity is applied to std and the MMSE intensity together")
    std = np.asarray(std, np.float64)
    edges = np.asarray(params["edges"])
    band = assign(np.asarray(intensity), edges) if edges.size > 1 else np.zeros(std.shape, int)
    out = np.empty_like(std)
    for b, m in enumerate(params["maps"]):
        mine = band == b
        out[mine] = apply_isotonic(m, std[mine])
    return out


def _trigamma_inverse(value: float) -> float:
    """Solve trigamma(y) = value for y > 0 by Newton's method (Smyth 2004's starting point and update)."""
    from scipy.special import polygamma

    y = 0.5 + 1.0 / value
    for _ in range(50):
        tri = float(polygamma(1, y))
        step = tri * (1 - tri / value) / float(polygamma(2, y))
        y += step
        if -step / y < 1e-8:
            break
    return y


def fit_smallk(pixels: Pixels, bins: pd.DataFrame) -> dict:
    """The expected true variance given a K-sample variance, under a prior fitted to all pixels.

    With K samples the per-pixel variance s^2 has only K-1 degrees of freedom: sorted into bins by
    s, the low bins hold pixels whose samples happened to agree (their true spread is larger)
    and the high bins the reverse. The true variances are taken to follow a scaled inverse
    chi-square prior (d0 degrees of freedom, scale s0^2), fitted to the spread of log s^2 as limma
    does for gene-wise variances (Smyth 2004); then, with nu = K - 1,
        E[sigma^2 | s^2] = (d0 s0^2 + nu s^2) / (d0 + nu - 2)
    (limma's moderated variance divides by d0 + nu instead: the right scale for a t-statistic, too
    small for an expected squared error). The MMSE, a mean of K samples, misses a target drawn from
    the same posterior by that variance times (1 + 1/K). No fit to the errors: it corrects the
    sampling, not the model.
    """
    from scipy.special import digamma, polygamma

    k = int(pixels.samples)
    if k < 2:
        raise InputError(None, "the small-K correction needs the number of samples K >= 2 behind each std",
                         "predict with predict.samples >= 2, or choose calibrate.method linear or isotonic")
    d = k - 1
    z = np.log(np.maximum(np.asarray(pixels.std, np.float64), 1e-12) ** 2)
    e = z - digamma(d / 2) + math.log(d / 2)
    excess = e.var(ddof=1) - float(polygamma(1, d / 2))
    if excess > 0:
        d0 = 2 * _trigamma_inverse(excess)
        s0_sq = math.exp(e.mean() + digamma(d0 / 2) - math.log(d0 / 2))
    else:  # the spread of s^2 is all sampling noise: every pixel has the same true variance
        d0, s0_sq = math.inf, math.exp(e.mean())
    return {"samples": k, "d0": d0 if math.isfinite(d0) else None, "s0": math.sqrt(s0_sq)}


def apply_smallk(params: dict, std: np.ndarray) -> np.ndarray:
    k, d0, s0_sq = params["samples"], params["d0"], params["s0"] ** 2
    var = np.asarray(std, np.float64) ** 2
    if d0 is None:
        expected = np.full_like(var, s0_sq)
    else:  # d0 + nu <= 2: the prior has no finite mean; fall back to the unbiased s^2
        expected = (d0 * s0_sq + (k - 1) * var) / (d0 + k - 3) if d0 + k - 3 > 0 else var
    return np.sqrt(expected * (1 + 1 / k))


METHODS: dict[str, Method] = {
    "linear": Method(fit_linear, apply_linear, "calibrated std = a * std + b, a and b fitted on the validation bins"),
    "isotonic": Method(fit_isotonic, apply_isotonic,
                       "a monotone map from std to the real error, fitted through the validation bins"),
    "isotonic_intensity": Method(fit_isotonic_intensity, apply_isotonic_intensity,
                                 "a monotone map from std to the real error per band of restored intensity, "
                                 "fitted through the validation bins", intensity=True),
    "smallk": Method(fit_smallk, apply_smallk,
                     "the K-sample std corrected for its own sampling noise (empirical-Bayes variance, "
                     "times 1 + 1/K for the MMSE); fits no error"),
}


# ----------------------------------------------------------------------------- coverage

LEVELS = (0.68, 0.95)


def gaussian_z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def coverage(error: np.ndarray, std: np.ndarray, levels=LEVELS) -> dict[float, float]:
    """Fraction of pixels whose target lies inside MMSE +- z * std (central Gaussian interval)."""
    error, std = np.abs(np.asarray(error)), np.asarray(std)
    return {level: float((error <= gaussian_z(level) * std).mean()) for level in levels}


def sample_statistics(samples: np.ndarray, target: np.ndarray, levels=LEVELS):
    """MMSE, std (unbiased variance) and, per level, whether the target lies in the samples' central interval."""
    samples = np.asarray(samples, np.float32)
    mmse = samples.mean(axis=0)
    std = samples.std(axis=0, ddof=1) if len(samples) > 1 else np.zeros_like(mmse)
    inside = {}
    for level in levels:
        lower, upper = np.quantile(samples, [0.5 - level / 2, 0.5 + level / 2], axis=0)
        inside[level] = (target >= lower) & (target <= upper)
    return mmse, std, inside


# ----------------------------------------------------------------------------- fit and judge


@dataclass(frozen=True)
class Judgement:
    split: str
    uce_before: float | None
    uce_after: float | None
    bins: pd.DataFrame = field(repr=False)
    in_sample: bool = False  # True: judged on the data it was fitted on (optimistic)
    coverage_before: dict[float, float] = field(default_factory=dict)  # Gaussian interval of the raw std
    coverage_after: dict[float, float] = field(default_factory=dict)  # ... of the calibrated std
    coverage_samples: dict[float, float] | None = None  # the samples' empirical interval (None: samples not kept)


@dataclass(frozen=True)
class Calibration:
    method: str
    params: dict
    fit_split: str
    fit_acquisitions: tuple[str, ...]
    samples: int = 0  # K of the predictions it was fitted on: a calibration holds for that K only

    @property
    def needs_intensity(self) -> bool:
        return METHODS[self.method].intensity

    def apply(self, std: np.ndarray, intensity: np.ndarray | None = None) -> np.ndarray:
        """The calibrated std of `std` (normalised units); `intensity`: the MMSE there, for maps that read it."""
        method = METHODS[self.method]
        out = method.apply(self.params, std, intensity) if method.intensity else method.apply(self.params, std)
        return out.astype(np.asarray(std).dtype, copy=False)

    def to_json(self) -> dict:
        return {"method": self.method, "params": self.params, "fit_split": self.fit_split,
                "fit_acquisitions": list(self.fit_acquisitions), "samples": self.samples}

    @classmethod
    def from_json(cls, data: dict) -> "Calibration":
        return cls(data["method"], data["params"], data["fit_split"], tuple(data["fit_acquisitions"]), data["samples"])


def _judgement(calibration: Calibration, pixels: Pixels, bins: int, in_sample: bool) -> Judgement:
    # the bins of the definition: quantiles of the judged split's own predicted std
    calibrated = calibration.apply(pixels.std, pixels.intensity)
    table = bin_table(pixels.split, pixels.std, pixels.error, quantile_edges(pixels.std, bins), calibrated)
    good = table[table["count"] > 0]
    return Judgement(pixels.split, uce(good["rmv"], good["rmse"]), uce(good["calibrated_rmv"], good["rmse"]),
                     table, in_sample, coverage(pixels.error, pixels.std), coverage(pixels.error, calibrated),
                     {lv: float(hit.mean()) for lv, hit in pixels.inside.items()} if pixels.inside else None)


def fit(pixels: Pixels, method: str = _CAL["method"], bins: int = _CAL["bins"]) -> tuple[Calibration, Judgement]:
    """Fit `method` on `pixels`; returns the calibration and its in-sample judgement (labelled in_sample)."""
    if method not in METHODS:
        raise InputError(None, f"calibrate.method {method!r} is unknown", f"use one of {sorted(METHODS)}")
    table = bin_table(pixels.split, pixels.std, pixels.error, quantile_edges(pixels.std, bins))
    params = METHODS[method].fit(pixels, table)
    calibration = Calibration(method, params, pixels.split, tuple(pixels.acquisitions), int(pixels.samples))
    return calibration, _judgement(calibration, pixels, bins, in_sample=True)


def judge(calibration: Calibration, pixels: Pixels, bins: int = _CAL["bins"]) -> Judgement:
    """UCE and coverage before and after `calibration` on held-out pixels; refuses the data it was fitted on."""
    if pixels.split == calibration.fit_split:
        raise CalibrationLeak(f"calibration was fitted on the {calibration.fit_split} split and cannot be judged on it; "
                              "judge it on another split (test)")
    shared = sorted(set(pixels.acquisitions) & set(calibration.fit_acquisitions))
    if shared:
        raise CalibrationLeak(f"acquisitions {shared} were used to fit the calibration and cannot judge it")
    return _judgement(calibration, pixels, bins, in_sample=False)


# ----------------------------------------------------------------------------- the rule


def _percent(values: dict[float, float] | None) -> dict[str, float] | None:
    return None if values is None else {f"{round(level * 100)}": value for level, value in values.items()}


def plain_sentence(judgement: Judgement, level: float = 0.95) -> str:
    """What the std map means, for a biologist, from the coverage measured on held-out images."""
    z, covered = gaussian_z(level), judgement.coverage_after.get(level)
    if covered is None:
        return ""
    return (f"The std map says how far each restored pixel may be from the truth. On test images never used "
            f"for fitting, the true intensity lay within ±{z:.3g} × std of the restored value at "
            f"{covered:.0%} of pixels (aimed at {level:.0%}): where the std is high, do not trust the detail; "
            f"where it is low, the restoration is probably right to within about one std.")


def _figures(judgement: Judgement) -> dict:
    return {"uce_before": judgement.uce_before, "uce_after": judgement.uce_after,
            "error_ratio": error_ratio(judgement.bins),
            "coverage": {"gaussian_before": _percent(judgement.coverage_before),
                         "gaussian_after": _percent(judgement.coverage_after),
                         "samples": _percent(judgement.coverage_samples)},
            "in_sample": judgement.in_sample}


def calibrate_model(model: str, val_pairs: list[TestPair], predict_dir, method: str = _CAL["method"], bins: int = _CAL["bins"],
                    max_pixels: int = _CAL["max_pixels"]) -> dict:
    """Fit `method` on the val predictions; the JSON that prediction applies (with its in-sample figures)."""
    val = collect(val_pairs, predict_dir, model, FIT_SPLIT, max_pixels)
    calibration, on_val = fit(val, method, bins)
    return {
        "model": model,
        "method": method,
        "description": METHODS[method].description,
        "calibration": calibration.to_json(),
        "bins": bins,
        "units": "normalised intensity (input percentiles 0.1-99.9 span 0-1)",
        "val": {"acquisitions": list(val.acquisitions), "pixels": int(val.std.size), **_figures(on_val),
                "bins_table": json.loads(on_val.bins[BIN_COLUMNS].to_json(orient="records"))},
    }


def judge_model(fitted: dict, test_pairs: list[TestPair], predict_dir, max_pixels: int = _CAL["max_pixels"]) -> tuple[dict, pd.DataFrame]:
    """Judge the calibration `fitted` (calibrate_model's JSON) on the test predictions.

    Returns the summary (fit and test figures, and the sentence for the report) and the bins
    table of both splits.
    """
    calibration = Calibration.from_json(fitted["calibration"])
    test = collect(test_pairs, predict_dir, fitted["model"], JUDGE_SPLIT, max_pixels)
    on_test = judge(calibration, test, fitted["bins"])
    summary = {k: v for k, v in fitted.items() if k != "val"}
    summary["val"] = {k: v for k, v in fitted["val"].items() if k != "bins_table"}
    summary["test"] = {"acquisitions": list(test.acquisitions), "pixels": int(test.std.size), **_figures(on_test)}
    summary["test"]["per_acquisition"] = [
        {"acquisition": name, "uce_before": j.uce_before, "uce_after": j.uce_after,
         "coverage_after": _percent(j.coverage_after)}
        for name, j in ((name, _judgement(calibration, part, fitted["bins"], in_sample=False))
                        for name, part in by_acquisition(test))]
    summary["sentence"] = plain_sentence(on_test)
    table = pd.concat([pd.DataFrame.from_records(fitted["val"]["bins_table"], columns=BIN_COLUMNS),
                       on_test.bins[BIN_COLUMNS]], ignore_index=True)
    return summary, table


def load(path) -> Calibration:
    """The calibration that rule calibrate fitted, from its JSON summary."""
    try:
        return Calibration.from_json(json.loads(open(path).read())["calibration"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"is not a readable calibration ({type(exc).__name__}: {exc})",
                         "delete it and rerun rule calibrate") from exc


def write_json(data: dict, path) -> None:
    write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


__all__ = ["Pixels", "Calibration", "Judgement", "CalibrationLeak", "METHODS", "Method", "collect", "fit", "judge",
           "uce", "error_ratio", "bin_table", "quantile_edges", "coverage", "sample_statistics", "calibrate_model",
           "judge_model", "write_json", "load", "plain_sentence"]
