"""Score the restorations of the test split against their targets.

Every estimate is compared with its target in the same way (flowrestore.analysis.metrics.compute_all):
the widefield input itself (the baseline every restoration must beat), each regression model's
prediction, and for each guided-CFM model its MMSE estimate (mean of all K posterior samples)
and one posterior sample.

Units. Predictions are stored in the INPUT's raw intensity units; the network works in
normalised units, value_norm = (value - input_low) / (input_high - input_low), which it learnt
to match target_norm = (target - target_low) / (target_high - target_low). Every estimate is
therefore first brought to normalised units with its own percentiles and then mapped into the
target's raw units (target_low + norm * (target_high - target_low)), so that compute_all, which
normalises with the target's percentiles, compares like with like.

Data with a noiseless truth (the `truth` role: simulated data, or a phantom) are scored against it
instead of the target, which may then be a noisy reference. The truth is in the units of the image
restored, so there every estimate is compared as stored, in those raw units. So is a prediction of a
method that reads every image on one scale (its checkpoint's `normalization`): its output is already
in the camera's units, which the target shares. Rows carry the acquisition's `quality` label (e.g. the
input's photon count, from the pairing), and `by_quality` gives the means per label; a method that
restores in a few steps (relative_flow) stores each step's state (channels step_1, ...), scored as
estimates of their own, so PSNR can be followed step by step.

A metric that cannot be computed is reported as missing with its reason (the `missing` column),
never as NaN; a problem with the files (no test pairs, a prediction of the wrong shape) stops
with an InputError that names the file and the fix.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import zarr

from . import metrics as M
from ..atomic import atomic_output
from ..config import defaults, settings as config_settings
from ..errors import InputError
from ..data.io import open_image
from ..data.pairing import parse_pixel_size, read_rows

log = logging.getLogger(__name__)

# compute_all's names -> table columns. FRC resolutions are in micrometres, or in pixels for a split
# where some pair's pixel size is unknown (frc_unit; the table's pixel_size_um is then empty there).
METRICS = {"psnr": "psnr", "psnr_affine": "psnr_affine", "ssim": "ssim", "ms_ssim": "ms_ssim",
           "micro_ssim": "micro_ssim", "micro_ms3im": "micro_ms3im", "frc_1/7": "frc_1/7_um", "frc_0.5": "frc_0.5_um"}
COLUMNS = list(METRICS.values())
# For each column: is a larger value better? (FRC resolution: smaller is finer, hence better.)
HIGHER_IS_BETTER = {"psnr": True, "psnr_affine": True, "ssim": True, "ms_ssim": True, "micro_ssim": True,
                    "micro_ms3im": True, "frc_1/7_um": False, "frc_0.5_um": False}
# Only where the split's images are ZYX stacks: the axial resolution (metrics.axial_frc_resolution), in µm
# along Z (or planes, with frc_unit's pixels), a column of metrics.tsv and summary.tsv.
AXIAL = "frc_axial_1/7_um"
HIGHER_IS_BETTER[AXIAL] = False
INPUT = "input"  # the `model` and `estimate` of the widefield input rows
ROW_KEYS = ["acquisition", "model", "method", "estimate", "label", "quality"]


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class TestPair:
    """One paired acquisition of the manifest, with the paths of its converted images."""

    acquisition: str
    input_path: str  # the image restored: the input, or the reference of an acquisition without input
    target_path: str  # what it is scored against: the truth where there is one, else the target
    input_norm: tuple[float, float]
    target_norm: tuple[float, float]  # the input's for a truth (it shares the input's units)
    pixel_size: tuple[float | None, ...]  # µm per axis, None where unknown
    truth: bool = False  # scored against a noiseless truth, in the raw units of the image restored
    quality: str = ""


def pairs_of_split(manifest, convert_dir, split: str = "test", required: bool = True) -> list[TestPair]:
    """The manifest's scorable pairs of one split; an InputError when there is none (unless not `required`).

    A reference without input and without truth has nothing to be scored against, so it is left out.
    """
    rows = read_rows(manifest)
    chosen = [r for r in rows if r["split"] == split and (r.get("input") or r.get("truth"))]
    if not chosen and required:
        counts = ", ".join(f"{s}: {sum(r['split'] == s for r in rows)}" for s in ("train", "val", "test"))
        raise InputError(manifest, f"has no {split} pairs ({counts})",
                         f"hold out acquisitions for {split} (raise data.split.{split}, or give split={split} "
                         "rows in the data.samples sheet) and rerun")
    out = []
    for r in chosen:
        acq, truth = r["pair_id"], bool(r.get("truth"))
        input_norm = (float(r["input_low"]), float(r["input_high"]))
        out.append(TestPair(
            acq, os.path.join(convert_dir, "input" if r.get("input") else "target", f"{acq}.ome.zarr"),
            os.path.join(convert_dir, "truth" if truth else "target", f"{acq}.ome.zarr"),
            input_norm, input_norm if truth else (float(r["target_low"]), float(r["target_high"])),
            parse_pixel_size(r["pixel_size"]), truth, r.get("quality") or "",
        ))
    return out


def prediction_info(path) -> dict:
    """The `flowrestore` attributes that predict.finalize writes into a prediction."""
    try:
        group = zarr.open_group(str(path), mode="r")
        info = dict(group.attrs["flowrestore"])
        info["shape"] = tuple(group["0"].shape[1:])
    except Exception as exc:  # missing folder, not a prediction, damaged metadata
        raise InputError(path, f"is not a readable flowrestore prediction ({type(exc).__name__}: {exc})",
                         "delete it and rerun the predict rule for it") from exc
    return info


def read_channels(path, names: list[str]) -> dict[str, np.ndarray]:
    """Only the named channels of a prediction (absent names are left out), float32."""
    group = zarr.open_group(str(path), mode="r")
    channels = group.attrs["flowrestore"]["channels"]
    array = group["0"]
    return {n: np.asarray(array[channels.index(n)], dtype=np.float32) for n in names if n in channels}


def load_image(path) -> np.ndarray:
    return np.asarray(open_image(path).data.compute(), dtype=np.float32)


def check_shape(prediction_path, prediction_shape, target_path, target_shape) -> None:
    if tuple(prediction_shape) != tuple(target_shape):
        raise InputError(prediction_path, f"has shape {tuple(prediction_shape)} but its target {target_path} has shape "
                         f"{tuple(target_shape)}", "delete the prediction and rerun the predict rule, so that it restores "
                         "the current input of this acquisition")


def normalised(x: np.ndarray, low: float, high: float) -> np.ndarray:
    return (x - np.float32(low)) / np.float32(high - low)


def to_target_units(x_norm: np.ndarray, target_norm: tuple[float, float]) -> np.ndarray:
    low, high = target_norm
    return np.float32(low) + x_norm * np.float32(high - low)


def comparable(value: np.ndarray, norm: tuple[float, float], pair: TestPair, info: dict | None = None) -> np.ndarray:
    """An estimate stored in the raw units of the image restored, in the units it is scored in.

    Against a truth, or from a model that reads every image on one scale (`info["one_scale"]`),
    the raw units are already those of what it is scored against; otherwise it goes through normalised
    units, from its own percentiles `norm` into the target's.
    """
    if pair.truth or (info or {}).get("one_scale"):
        return value
    return to_target_units(normalised(value, *norm), pair.target_norm)


def lateral_pixel_size(pixel_size: tuple[float | None, ...]) -> float | None:
    """The in-plane (Y, X) pixel size FRC is measured with (their mean if they differ); None if unknown."""
    y, x = pixel_size[-2:]
    if y is None or x is None:
        return None
    if not math.isclose(y, x, rel_tol=0.01):
        log.warning("pixel size differs in Y (%g) and X (%g); FRC uses their mean", y, x)
    return float((y + x) / 2)


def frc_unit(pairs: list[TestPair]) -> str:
    """"µm" when every pair's lateral pixel size is known, else "pixels" for all of them: one unit
    per table, since a mean over µm and pixels means nothing."""
    return "µm" if all(lateral_pixel_size(p.pixel_size) is not None for p in pairs) else "pixels"


def _frc_pixel(pair: TestPair, unit: str) -> float:
    return lateral_pixel_size(pair.pixel_size) if unit == "µm" else 1.0


def on_target_grid(image: np.ndarray, pair: TestPair, target_shape, order: int = 3) -> tuple[np.ndarray, str]:
    """The input on its target's grid and its label: as it is, or, for a target f times finer in Y and X
    (or in Z), spline interpolation of `order` (3: bicubic, or cubic along Z; 1: linear) on an area-aligned
    grid (each input voxel covers f target voxels per axis, as the integration operator has it: scipy's
    zoom with grid_mode=True)."""
    from scipy import ndimage

    from ..data.pairing import grid_factor

    if tuple(image.shape) == tuple(target_shape):
        return image, estimate_label(INPUT, INPUT, INPUT)
    factor = grid_factor(tuple(image.shape), tuple(target_shape))
    if factor is None:
        check_shape(pair.input_path, image.shape, pair.target_path, target_shape)
    fine = ndimage.zoom(image, factor, order=order, mode="grid-mirror", grid_mode=True).astype(np.float32)
    kind = {1: "linear", 3: "cubic" if factor[-1] == 1 else "bicubic"}.get(order, f"order-{order} spline")
    return fine, f"input ({kind}{' axial' if factor[-1] == 1 else ''} x{max(factor)})"


def axial_factor(image_shape, target_shape) -> int:
    """Target planes per input plane of a pair restored along Z only (1: none)."""
    from ..data.pairing import grid_factor

    factor = grid_factor(tuple(image_shape), tuple(target_shape))
    return factor[0] if factor and len(factor) == 3 and factor[1:] == (1, 1) else 1


def prediction_norm(info: dict, pair: TestPair) -> tuple[float, float]:
    """The normalisation that brings a prediction to the network's units of the target.

    Usually the input's percentiles (the network matches each target's percentiles). A model that reads
    inputs and targets on one intensity scale (`one_scale`) restores into the target's own raw units, so
    the target's percentiles are the ones to use."""
    if info.get("one_scale"):
        return pair.target_norm
    norm = info.get("normalization")
    if norm:
        return float(norm["low"]), float(norm["high"])
    return pair.input_norm


# ----------------------------------------------------------------------------- one row


def score(estimate: np.ndarray | None, target: np.ndarray, pixel_size: float, why_absent: str = "") -> dict:
    """Metric columns plus `missing` ({column: reason}); `estimate=None` -> all missing with `why_absent`."""
    if estimate is None:
        return {c: None for c in COLUMNS} | {"missing": {c: why_absent for c in COLUMNS}}
    result = M.compute_all(estimate, target, pixel_size=pixel_size)
    out = {METRICS[k]: result[k] for k in METRICS}
    out["missing"] = {METRICS[k]: v for k, v in result["missing"].items()}
    return out


def format_missing(missing: dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in missing.items())


def stochastic(method: str) -> bool:
    """Whether `method` draws posterior samples (the method's own declaration; the input is not)."""
    from ..methods import method_class

    return method != INPUT and method_class(method).stochastic


def step_channels(info: dict) -> list[str]:
    """The states a few-step method stored after each step but the last (the last is `mmse`)."""
    return [c for c in info.get("channels", []) if c.startswith("step_") and c[5:].isdigit()]


def estimate_label(model: str, method: str, estimate: str) -> str:
    if model == INPUT:
        return "input (widefield)"
    if estimate.startswith("step_"):
        return f"{model} ({method}) after step {estimate[5:]}"
    if not stochastic(method):
        return f"{model} ({method})"
    return f"{model} {'MMSE' if estimate == 'mmse' else 'posterior sample' if estimate == 'sample_0' else estimate}"


# ----------------------------------------------------------------------------- whole split


def evaluate(manifest, convert_dir, predict_dir, models: dict[str, str], split: str = "test",
             psf_sigma: float | None = None, rl_iterations: int = defaults("evaluate")["rl_iterations"],
             psfs: dict | None = None) -> pd.DataFrame:
    """One row per acquisition x estimate; `models` is {name: method}. `psf_sigma` (pixels): also score
    Wiener and Richardson-Lucy deconvolutions of the input with that Gaussian PSF (analysis.classical),
    labelled "true PSF"; `psfs` {label: Gaussian std in pixels or PSF file}: with each of these as well.

    Columns: acquisition, model, method, estimate, label, pixel_size_um, the metric columns
    (empty when missing) and `missing` ("column: reason; ...").
    """
    rows = []
    kernels = None  # (label, key, Gaussian std or PSF array), read once the images' axes are known
    pairs = pairs_of_split(manifest, convert_dir, split)
    unit = frc_unit(pairs)
    axial = False
    for pair in pairs:
        target = load_image(pair.target_path)
        pixel = _frc_pixel(pair, unit)
        raw = load_image(pair.input_path)
        widefield, input_label = on_target_grid(raw, pair, target.shape)
        estimates = [(INPUT, INPUT, INPUT, comparable(widefield, pair.input_norm, pair), "")]
        labels = {INPUT: input_label}
        if axial_factor(raw.shape, target.shape) > 1:  # the classical axial baseline beside the cubic one
            linear, labels["axial_linear"] = on_target_grid(raw, pair, target.shape, order=1)
            estimates.append(("axial_linear", INPUT, "mmse", comparable(linear, pair.input_norm, pair), ""))
        del raw
        z_size = (pair.pixel_size[0] if unit == "µm" else 1.0) if target.ndim == 3 else None
        axial = axial or target.ndim == 3
        if kernels is None:
            kernels = _kernels(psf_sigma, psfs, target.ndim)
        for psf_label, key, psf in kernels:
            from .classical import deconvolutions

            for name, label, value in deconvolutions(widefield, psf, rl_iterations, psf_label, key):
                estimates.append((name, INPUT, "mmse", value, ""))
                labels[name] = label
        del widefield
        for model, method in models.items():
            path = os.path.join(predict_dir, model, f"{pair.acquisition}.ome.zarr")
            info = prediction_info(path)
            check_shape(path, info["shape"], pair.target_path, target.shape)
            wanted = ["mmse", "sample_0"] if stochastic(method) else ["mmse"] + step_channels(info)
            channels = read_channels(path, wanted)
            norm = prediction_norm(info, pair)
            for name in wanted:
                value = channels.get(name)
                why = "" if value is not None else (
                    f"the prediction stores no channel {name} (channels: {', '.join(info.get('channels', []))}; "
                    "set predict.keep_samples >= 1 to keep a posterior sample)")
                if value is not None:
                    value = comparable(value, norm, pair, info)
                estimates.append((model, method, name, value, why))
        for model, method, name, value, why in estimates:
            result = score(value, target, pixel, why)
            if z_size is not None:
                extra = _axial_score(value, target, z_size, why)
                result = result | {AXIAL: extra[AXIAL], "missing": result["missing"] | extra.get("missing", {})}
            rows.append({"acquisition": pair.acquisition, "model": model, "method": method, "estimate": name,
                         "label": labels[model] if model in labels else estimate_label(model, method, name),
                         "quality": pair.quality,
                         "pixel_size_um": lateral_pixel_size(pair.pixel_size)}
                        | {c: result.get(c) for c in COLUMNS + [AXIAL]} | {"missing": format_missing(result["missing"])})
            log.info("%s %s: psnr %s", pair.acquisition, rows[-1]["label"], rows[-1]["psnr"])
    columns = COLUMNS + ([AXIAL] if axial else [])
    return pd.DataFrame(rows, columns=ROW_KEYS + ["pixel_size_um"] + columns + ["missing"])


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") or "psf"


def _kernels(psf_sigma, psfs: dict | None, dims: int) -> list[tuple]:
    """(label, model-name key, Gaussian std or PSF array) of each PSF the deconvolutions are scored with."""
    from ..physics.tasks import read_psf

    return ([("true PSF", "", psf_sigma)] if psf_sigma else []) + [
        (label, _slug(label), read_psf(value, dims).numpy() if isinstance(value, (str, os.PathLike)) else value)
        for label, value in (psfs or {}).items()]


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The metric columns of a table: COLUMNS, and AXIAL where its images are stacks."""
    return COLUMNS + ([AXIAL] if AXIAL in table.columns else [])


def _axial_score(estimate, target, z_size: float, why_absent: str) -> dict:
    """{AXIAL: value or None, "missing": the score's missing reasons plus this one's}."""
    if estimate is None:
        return {AXIAL: None, "missing": {AXIAL: why_absent}}
    try:
        return {AXIAL: M.axial_frc_resolution(estimate, target, z_size=z_size)}
    except M.MetricUnavailable as error:
        return {AXIAL: None, "missing": {AXIAL: str(error)}}


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per estimate: number of images, mean and std of every metric over the images where it exists,
    how many images miss it, and the mean/std of the per-image PSNR gain over the input."""
    reference = table[table["model"] == INPUT].set_index("acquisition")["psnr"]
    out = []
    for (model, method, estimate, label), group in table.groupby(["model", "method", "estimate", "label"], sort=False):
        row = {"model": model, "method": method, "estimate": estimate, "label": label, "images": len(group)}
        notes = []
        for c in metric_columns(table):
            values = pd.to_numeric(group[c], errors="coerce").dropna()
            row[f"{c}_mean"] = float(values.mean()) if len(values) else None
            row[f"{c}_std"] = float(values.std(ddof=0)) if len(values) else None
            row[f"{c}_missing"] = len(group) - len(values)
            if len(values) < len(group):
                reasons = sorted({part.split(": ", 1)[1] for m in group["missing"].fillna("") for part in m.split("; ")
                                  if part.startswith(f"{c}: ")})
                notes.append(f"{c}: missing in {len(group) - len(values)} of {len(group)} images ({' | '.join(reasons)})")
        gain = (pd.to_numeric(group.set_index("acquisition")["psnr"], errors="coerce")
                - pd.to_numeric(reference, errors="coerce")).dropna()
        row["psnr_gain_mean"] = float(gain.mean()) if len(gain) else None
        row["psnr_gain_std"] = float(gain.std(ddof=0)) if len(gain) else None
        row["missing"] = "; ".join(notes)
        out.append(row)
    return pd.DataFrame(out)


QUALITY_COLUMNS = ["quality", "model", "method", "estimate", "label", "images", "psnr_mean", "psnr_std", "ssim_mean",
                   "ssim_std", "psnr_gain_mean", "psnr_gain_std"]


def by_quality(table: pd.DataFrame) -> pd.DataFrame:
    """Per input-quality label and estimate: images, mean/std of PSNR and SSIM and of the per-image PSNR gain
    over the input. Empty (with its columns) when no acquisition has a label."""
    labelled = table[table["quality"].fillna("").astype(str) != ""]
    out = []
    for quality, part in labelled.groupby("quality", sort=False):
        reference = pd.to_numeric(part[part["model"] == INPUT].set_index("acquisition")["psnr"], errors="coerce")
        for (model, method, estimate, label), group in part.groupby(["model", "method", "estimate", "label"], sort=False):
            row = {"quality": quality, "model": model, "method": method, "estimate": estimate, "label": label,
                   "images": len(group)}
            for c in ("psnr", "ssim"):
                values = pd.to_numeric(group[c], errors="coerce").dropna()
                row[f"{c}_mean"] = float(values.mean()) if len(values) else None
                row[f"{c}_std"] = float(values.std(ddof=0)) if len(values) else None
            gain = (pd.to_numeric(group.set_index("acquisition")["psnr"], errors="coerce") - reference).dropna()
            row["psnr_gain_mean"] = float(gain.mean()) if len(gain) else None
            row["psnr_gain_std"] = float(gain.std(ddof=0)) if len(gain) else None
            out.append(row)
    frame = pd.DataFrame(out, columns=QUALITY_COLUMNS)
    # Sorted by the label's leading number when it has one ("25 photons" before "200 photons"), else by name.
    key = frame["quality"].map(lambda q: (0, float(m.group()), q) if (m := re.match(r"[-+]?\d*\.?\d+", str(q))) else (1, 0.0, q))
    return frame.iloc[sorted(range(len(frame)), key=lambda i: key.iloc[i])].reset_index(drop=True)


def paired_differences(table: pd.DataFrame, a: str, b: str, columns=COLUMNS) -> pd.DataFrame:
    """Per metric: mean/std over images of (label a - label b) and how often a is better."""
    pa = table[table["label"] == a].set_index("acquisition")
    pb = table[table["label"] == b].set_index("acquisition")
    out = []
    for c in columns:
        d = (pd.to_numeric(pa[c], errors="coerce") - pd.to_numeric(pb[c], errors="coerce")).dropna()
        better = (d > 0) if HIGHER_IS_BETTER[c] else (d < 0)
        out.append({"metric": c, "a": a, "b": b, "images": len(d),
                    "difference_mean": float(d.mean()) if len(d) else None,
                    "difference_std": float(d.std(ddof=0)) if len(d) else None,
                    "a_better_in": int(better.sum())})
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- perception-distortion


def prefix_channels(info: dict) -> list[tuple[int, str]]:
    """(number of averaged samples, channel): mean_1, mean_2, ... and mmse as the mean of all K."""
    channels = info.get("channels", [])
    k = int(info.get("sampling", {}).get("samples", 0))
    pairs = sorted((int(c.split("_", 1)[1]), c) for c in channels if c.startswith("mean_") and c[5:].isdigit())
    if not any(n == 1 for n, _ in pairs) and "sample_0" in channels:
        pairs.insert(0, (1, "sample_0"))  # the mean of one sample is the sample itself
    if "mmse" in channels and k:
        pairs = [p for p in pairs if p[0] < k] + [(k, "mmse")]
    return pairs


def perception_distortion(manifest, convert_dir, predict_dir, models: dict[str, str], split: str = "test") -> pd.DataFrame:
    """PSNR and FRC resolution of the mean of the first n posterior samples, n = 1, 2, 4, ..., K.

    Averaging more samples moves the estimate from a sharp, plausible image (one sample) toward
    the blurrier minimum-error MMSE: PSNR rises while fine detail that is not certain fades.
    """
    rows = []
    sampled = [m for m, k in models.items() if stochastic(k)]
    if not sampled:
        return pd.DataFrame(columns=["model", "acquisition", "samples", "channel", "psnr", "frc_1/7_um", "missing"])
    pairs = pairs_of_split(manifest, convert_dir, split)
    unit = frc_unit(pairs)
    for pair in pairs:
        target = load_image(pair.target_path)
        pixel = _frc_pixel(pair, unit)
        for model in sampled:
            path = os.path.join(predict_dir, model, f"{pair.acquisition}.ome.zarr")
            info = prediction_info(path)
            check_shape(path, info["shape"], pair.target_path, target.shape)
            norm = prediction_norm(info, pair)
            for n, channel in prefix_channels(info):
                value = comparable(read_channels(path, [channel])[channel], norm, pair, info)
                row = {"model": model, "acquisition": pair.acquisition, "samples": n, "channel": channel}
                missing = {}
                for column, fn in (("psnr", lambda: M.psnr(value, target)),
                                   ("frc_1/7_um", lambda: M.frc_resolution(value, target, pixel_size=pixel))):
                    try:
                        v = fn()
                    except M.MetricUnavailable as e:
                        v, missing[column] = None, str(e)
                    if v is not None and not math.isfinite(v):
                        v, missing[column] = None, "infinite: prediction identical to target (zero error)"
                    row[column] = v
                row["missing"] = format_missing(missing)
                rows.append(row)
    return pd.DataFrame(rows, columns=["model", "acquisition", "samples", "channel", "psnr", "frc_1/7_um", "missing"])


def write_tsv(frame: pd.DataFrame, path) -> None:
    """TSV with missing values as empty cells (their reasons are in the `missing` column)."""
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, na_rep="", float_format="%.6g")


def read_tsv(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])


def run(manifest, convert_dir, predict_dir, models: dict[str, str], metrics_out, summary_out, pd_out,
        comparisons_out=None, quality_out=None, settings: dict | None = None) -> pd.DataFrame:
    """The evaluate rule: all tables at once. `settings`: the config's `evaluate` section (classical baselines)."""
    settings = config_settings("evaluate", settings)
    table = evaluate(manifest, convert_dir, predict_dir, models, psf_sigma=settings["psf_sigma"],
                     rl_iterations=settings["rl_iterations"], psfs=settings["psfs"])
    summary = summarize(table)
    curve = perception_distortion(manifest, convert_dir, predict_dir, models)
    write_tsv(table, metrics_out)
    write_tsv(summary, summary_out)
    write_tsv(curve, pd_out)
    if comparisons_out:
        write_tsv(comparisons(table, models), comparisons_out)
    if quality_out:
        write_tsv(by_quality(table), quality_out)
    return table


def baselines(summary: pd.DataFrame) -> dict[str, dict]:
    """{label: {psnr, frc_1/7_um}} means of the point estimators and the input: reference lines."""
    out = {}
    for r in summary.to_dict("records"):
        if not stochastic(r["method"]):
            out[r["label"]] = {c: r.get(f"{c}_mean") for c in ("psnr", "frc_1/7_um")}
    return out


def comparisons(table: pd.DataFrame, models: dict[str, str]) -> pd.DataFrame:
    """Paired per-image differences: each estimate vs the input, and each sampled MMSE vs each point estimator."""
    labels = {m: estimate_label(m, k, "mmse") for m, k in models.items()}
    input_label = next(iter(table.loc[table["model"] == INPUT, "label"]), estimate_label(INPUT, INPUT, INPUT))
    parts = [paired_differences(table, lab, input_label) for lab in labels.values()]
    for g, kg in models.items():
        for r, kr in models.items():
            if stochastic(kg) and not stochastic(kr):
                parts.append(paired_differences(table, labels[g], labels[r]))
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["metric", "a", "b", "images", "difference_mean", "difference_std", "a_better_in"])


def crop_window(target: np.ndarray, size: int) -> tuple[slice, ...]:
    """The (z,) y, x window of edge `size` whose target has the most structure (largest variance)."""
    plane = target
    lead: tuple = ()
    if target.ndim == 3:
        z = int(np.argmax(target.reshape(target.shape[0], -1).sum(axis=1)))
        plane, lead = target[z], (z,)
    ny, nx = plane.shape
    sy, sx = min(size, ny), min(size, nx)
    best, where = -1.0, (0, 0)
    step_y, step_x = max(1, sy // 4), max(1, sx // 4)
    for y in list(range(0, ny - sy + 1, step_y)) + [ny - sy]:
        for x in list(range(0, nx - sx + 1, step_x)) + [nx - sx]:
            v = float(plane[y:y + sy, x:x + sx].var())
            if v > best:
                best, where = v, (y, x)
    return lead + (slice(where[0], where[0] + sy), slice(where[1], where[1] + sx))


def example_panels(pair: TestPair, predict_dir, models: dict[str, str], size: int = defaults("evaluate")["crop"]) -> dict:
    """Crops (normalised units) for the example figure of one acquisition.

    {"window", "input", "target", "point": {model: crop}, "sampled": {model: {"sample", "mmse", "std", "error"}},
     "labels": {model: column title}}
    with std and |error| in the same normalised units, so they can share one colour bar.
    """
    target = load_image(pair.target_path)
    window = crop_window(target, size)
    target_n = normalised(target[window], *pair.target_norm)
    widefield, input_label = on_target_grid(load_image(pair.input_path), pair, target.shape)
    out = {"window": window, "target": target_n, "input_label": input_label,
           "input": normalised(widefield[window], *pair.input_norm), "point": {}, "sampled": {}, "labels": {}}
    for model, method in models.items():
        path = os.path.join(predict_dir, model, f"{pair.acquisition}.ome.zarr")
        info = prediction_info(path)
        check_shape(path, info["shape"], pair.target_path, target.shape)
        # the normalisation that puts the estimate beside the target (see `comparable`)
        raw = pair.truth or info.get("one_scale")
        low, high = pair.target_norm if raw else prediction_norm(info, pair)
        ch = read_channels(path, ["mmse", "std", "sample_0"])
        mmse = normalised(ch["mmse"][window], low, high)
        out["labels"][model] = estimate_label(model, method, "mmse")
        if not stochastic(method):
            out["point"][model] = mmse
        else:
            out["sampled"][model] = {"mmse": mmse, "sample": normalised(ch["sample_0"][window], low, high) if "sample_0" in ch else None,
                                    "std": ch["std"][window] / np.float32(high - low) if "std" in ch else None,
                                    "error": np.abs(mmse - target_n)}
    return out


def model_methods(models: dict) -> dict[str, str]:
    """{name: method} from the workflow's MODELS ({name: {method, ...}}) or already {name: method}."""
    return {k: (v["method"] if isinstance(v, dict) else v) for k, v in models.items()}


__all__ = ["evaluate", "summarize", "by_quality", "perception_distortion", "comparisons", "paired_differences", "run",
           "pairs_of_split", "write_tsv", "read_tsv", "example_panels"]
