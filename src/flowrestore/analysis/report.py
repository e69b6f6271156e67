"""One self-contained HTML report of a run: data, quality, examples, calibration, training, config.

Every figure is embedded as a base64 data URI and the styles are inline, so the single file can be
mailed or archived and opens offline in any browser. A small inline script records, once the page
has loaded, how many images decoded (`data-images-loaded` / `data-images-total` on <body>), which
the tests read back from headless Chromium.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import jinja2
import pandas as pd
import yaml

from ..atomic import write_text
from .evaluate import AXIAL, COLUMNS, INPUT, frc_unit, pairs_of_split, read_tsv
from ..data.pairing import SPLITS, read_rows

TEMPLATE = "report.html.j2"
METRIC_TITLES = {"psnr": "PSNR (dB)", "psnr_affine": "PSNR affine (dB)", "ssim": "SSIM", "ms_ssim": "MS-SSIM",
                 "micro_ssim": "MicroSSIM", "micro_ms3im": "MicroMS3IM",
                 "frc_1/7_um": "FRC resolution 1/7 (µm)", "frc_0.5_um": "FRC resolution 0.5 (µm)",
                 AXIAL: "axial FRC resolution 1/7 (µm)"}
DIGITS = {"psnr": 2, "psnr_affine": 2, "ssim": 3, "ms_ssim": 3, "micro_ssim": 3, "micro_ms3im": 3, "frc_1/7_um": 3,
          "frc_0.5_um": 3, AXIAL: 3}


def _columns(frame: pd.DataFrame) -> list[str]:
    """The metric columns to show: COLUMNS, and the axial FRC where the images are stacks."""
    return COLUMNS + [AXIAL] if AXIAL in frame.columns or f"{AXIAL}_mean" in frame.columns else COLUMNS


@dataclass(frozen=True)
class Figure:
    title: str
    path: str
    caption: str = ""


def data_uri(path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    mime = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "svg": "image/svg+xml"}.get(suffix, "image/png")
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _share(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _mean_std(mean, std, digits) -> str:
    if mean is None or (isinstance(mean, float) and not math.isfinite(mean)):
        return "missing"
    if std is None or (isinstance(std, float) and not math.isfinite(std)):
        return _number(mean, digits)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _value(row, key):
    v = row.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _signed(value, digits=2, unit="") -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}{unit}"


def data_summary(manifest) -> list[dict]:
    rows = read_rows(manifest)
    out = []
    for split in SPLITS:
        chosen = [r for r in rows if r["split"] == split]
        shapes = Counter(r["shape"] for r in chosen)
        sizes = Counter(r["pixel_size"].replace(",", " × ") for r in chosen)
        out.append({"split": split, "count": len(chosen),
                    "shapes": ", ".join(f"{s} ({n})" if len(shapes) > 1 else s for s, n in shapes.items()) or "-",
                    "pixel_sizes": ", ".join(f"{s} ({n})" if len(sizes) > 1 else s for s, n in sizes.items()) or "-",
                    "acquisitions": ", ".join(r["pair_id"] for r in chosen) or "-"})
    return out


def summary_table(summary: pd.DataFrame) -> tuple[list[dict], list[str]]:
    rows, notes = [], []
    for r in summary.to_dict("records"):
        values = [_mean_std(_value(r, f"{c}_mean"), _value(r, f"{c}_std"), DIGITS[c]) for c in _columns(summary)]
        gain = "-" if r["model"] == INPUT else _mean_std(_value(r, "psnr_gain_mean"), _value(r, "psnr_gain_std"), 2)
        if gain not in ("-", "missing") and not gain.startswith("-"):
            gain = "+" + gain
        rows.append({"label": r["label"], "images": r["images"], "cells": values, "gain": gain,
                     "is_input": r["model"] == INPUT})
        if _value(r, "missing"):
            notes.append(f"{r['label']}: {r['missing']}")
    return rows, notes


def quality_tables(quality: pd.DataFrame) -> tuple[list[dict], list[dict]]:
    """(rows per input quality and estimate, rows of PSNR step by step per quality and few-step model)
    from evaluate.by_quality's table."""
    rows, steps = [], []
    for r in quality.to_dict("records"):
        if str(r["estimate"]).startswith("step_"):
            continue
        gain = "-" if r["model"] == INPUT else _signed(_value(r, "psnr_gain_mean"), 2)
        rows.append({"quality": r["quality"], "label": r["label"], "images": r["images"],
                     "psnr": _mean_std(_value(r, "psnr_mean"), _value(r, "psnr_std"), 2),
                     "ssim": _mean_std(_value(r, "ssim_mean"), _value(r, "ssim_std"), 3), "gain": gain,
                     "is_input": r["model"] == INPUT})
    for q, part in quality.groupby("quality", sort=False):
        start = part[part["model"] == INPUT]["psnr_mean"]
        for model, group in part[part["model"] != INPUT].groupby("model", sort=False):
            states = group[group["estimate"].astype(str).str.startswith("step_")]
            if not len(states):
                continue
            ordered = sorted(states.to_dict("records"), key=lambda r: int(str(r["estimate"])[5:]))
            ordered += group[group["estimate"] == "mmse"].to_dict("records")
            values = [_value(r, "psnr_mean") for r in ordered]
            steps.append({"quality": q, "model": model, "input": _number(start.iloc[0] if len(start) else None, 2),
                          "steps": [_number(v, 2) for v in values]})
    return rows, steps


def metric_titles(unit: str = "µm") -> dict[str, str]:
    """Column titles, with the FRC resolutions in `unit` (evaluate.frc_unit: µm, or pixels)."""
    return {k: v.replace("(µm)", f"({unit})") for k, v in METRIC_TITLES.items()}


def comparison_table(comparisons: pd.DataFrame, titles: dict[str, str] = METRIC_TITLES) -> list[dict]:
    out = []
    for r in comparisons.to_dict("records"):
        metric = r["metric"]
        out.append({"a": r["a"], "b": r["b"], "metric": titles.get(metric, metric),
                    "difference": _mean_std(_value(r, "difference_mean"), _value(r, "difference_std"), DIGITS.get(metric, 3)),
                    "better": f"{int(r['a_better_in'])} of {int(r['images'])}"})
    return out


def per_image_table(table: pd.DataFrame) -> list[dict]:
    return [{"acquisition": r["acquisition"], "label": r["label"],
             "cells": [_number(_value(r, c), DIGITS[c]) if _value(r, c) is not None else "missing" for c in _columns(table)],
             "missing": _value(r, "missing") or ""} for r in table.to_dict("records")]


def _cards(summary: pd.DataFrame, comparisons: pd.DataFrame, calibrations: list[dict]) -> list[dict]:
    cards = []
    for r in summary.to_dict("records"):
        if r["estimate"] == "mmse":
            gain = _value(r, "psnr_gain_mean")
            cards.append({"what": f"{r['label']}: PSNR gain over the widefield input",
                          "value": _signed(gain, 2, " dB"), "cls": "good" if gain and gain > 0 else "bad",
                          "note": f"± {_number(_value(r, 'psnr_gain_std'), 2)} dB over {r['images']} test images"})
    for r in comparisons.to_dict("records"):
        if r["metric"] == "psnr" and not r["b"].startswith("input"):
            d = _value(r, "difference_mean")
            cards.append({"what": f"{r['a']} vs {r['b']}: PSNR difference", "value": _signed(d, 2, " dB"),
                          "cls": "good" if d is not None and d > 0 else "bad",
                          "note": f"{r['a']} better in {int(r['a_better_in'])} of {int(r['images'])} test images"})
    for c in calibrations:
        test = c["test"]
        before, after, ratio = test["uce_before"], test["uce_after"], test["error_ratio"]
        cards.append({"what": f"{c['model']}: uncertainty calibration error on test (0 is perfect)",
                      "value": f"{_number(before, 2)} → {_number(after, 2)}",
                      "cls": "good" if after is not None and after < 0.2 and (ratio is None or ratio >= 1.5) else "bad",
                      "note": f"before → after {c['method']} calibration (fitted on validation images); error ratio "
                              f"{_number(ratio, 2)} (1 = std does not point at errors)"})
        covered = (test["coverage"]["gaussian_after"] or {}).get("95")
        if covered is not None:
            cards.append({"what": f"{c['model']}: test pixels inside ±1.96 × calibrated std (aim: 95%)",
                          "value": f"{covered:.1%}", "cls": "good" if 0.93 <= covered <= 0.97 else "bad",
                          "note": "the 95% interval the std map implies, checked on held-out images"})
    return cards


def _calibration_caption(c: dict) -> str:
    return (f"Each dot is one group of validation (left) or test (right) pixels with similar predicted std. Red: the model's own "
            f"std; blue: after calibration ({c['description']}). Dots on the dashed diagonal mean the predicted error equals "
            "the real error. Below: pixels per group.")


def _coverage_rows(coverage: dict) -> list[dict]:
    """Rows interval -> coverage for the table: Gaussian before/after calibration, and the samples' quantiles."""
    kinds = [("gaussian_before", "MMSE ± z × std of the samples (before calibration)"),
             ("gaussian_after", "MMSE ± z × calibrated std"), ("samples", "the samples' own quantiles")]
    return [{"interval": label, **{f"c{level}": f"{values[level]:.1%}" for level in ("68", "95")}}
            for key, label in kinds if (values := coverage.get(key))]


class _PlainDumper(yaml.SafeDumper):
    """YAML without &anchors/*aliases (the config shares dicts between models after validation)."""

    def ignore_aliases(self, data):
        return True


def _calibration_warning(c: dict) -> str:
    ratio = c["test"]["error_ratio"]
    if ratio is not None and ratio < 1.5:
        return (f"The predicted std of {c['model']} hardly tells which pixels are wrong: on the test images, the pixels "
                f"with the highest predicted std are only {ratio:.2f} times as wrong as those with the lowest. After "
                "calibration its size is right on average, but a map of it should not be read pixel by pixel.")
    return ""


def render(context: dict) -> str:
    env = jinja2.Environment(loader=jinja2.PackageLoader("flowrestore.analysis", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template(TEMPLATE).render(**context)


def _version() -> str:
    try:
        return metadata.version("flowrestore")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def build_report(output, config: dict, manifest, metrics_tsv, summary_tsv, comparisons_tsv,
                 perception_png=None, calibration: list[tuple[str, str]] = (), examples: list[Figure] = (),
                 training: list[Figure] = (), title: str = "flowrestore report", results: str = "results",
                 quality_tsv=None) -> str:
    """Write the report to `output` (atomically) and return its HTML.

    `calibration`: (json path, png path) per sampling model; `examples`/`training`: figures in order;
    `quality_tsv`: evaluate.by_quality's table (a section per input quality when it has rows).
    """
    summary = read_tsv(summary_tsv)
    table = read_tsv(metrics_tsv)
    comparisons = read_tsv(comparisons_tsv)
    summary_rows, summary_missing = summary_table(summary)
    calibrations = []
    for json_path, png_path in calibration:
        c = json.loads(Path(json_path).read_text())
        val, test = c["val"], c["test"]
        calibrations.append(c | {
            "uce_val_before": _number(val["uce_before"], 3), "uce_val_after": _number(val["uce_after"], 3),
            "uce_test_before": _number(test["uce_before"], 3), "uce_test_after": _number(test["uce_after"], 3),
            "ratio": _number(test["error_ratio"], 2),
            "test_cls": "good" if test["uce_after"] is not None and test["uce_after"] <= 0.05 else "bad",
            "coverage": _coverage_rows(test["coverage"]),
            "per_acquisition": [{"acquisition": a["acquisition"], "uce_before": _number(a["uce_before"], 3),
                                 "uce_after": _number(a["uce_after"], 3),
                                 "c68": _share((a.get("coverage_after") or {}).get("68")),
                                 "c95": _share((a.get("coverage_after") or {}).get("95"))}
                                for a in test.get("per_acquisition", [])],
            "samples_note": "" if test["coverage"]["samples"] else
            "The samples' own intervals are not shown: the predictions did not keep all their samples "
            "(set predict.keep_samples to predict.samples).",
            "pixels": f"{val['pixels']:,} / {test['pixels']:,}",
            "src": data_uri(png_path), "caption": _calibration_caption(c),
            "warning": _calibration_warning(c)})
    cards = _cards(summary, comparisons, [json.loads(Path(j).read_text()) for j, _ in calibration])
    n_test = int(summary["images"].max()) if len(summary) else 0
    scored = pairs_of_split(manifest, "", "test", required=False)
    unit = frc_unit(scored)
    quality_rows, step_rows = quality_tables(read_tsv(quality_tsv)) if quality_tsv else ([], [])
    titles = metric_titles(unit)
    context = {
        "title": title, "version": _version(), "results": results,
        "created": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cards": cards, "splits": data_summary(manifest), "n_test": n_test,
        "metric_columns": [{"key": c, "title": titles[c]} for c in _columns(summary)], "frc_unit": unit,
        "summary_rows": summary_rows, "summary_missing": summary_missing,
        "quality_rows": quality_rows, "step_rows": step_rows,
        "step_count": max((len(r["steps"]) for r in step_rows), default=0),
        "against_truth": any(p.truth for p in scored),
        "comparison_rows": comparison_table(comparisons, titles), "per_image_rows": per_image_table(table),
        "examples": [{"title": f.title, "caption": f.caption, "src": data_uri(f.path)} for f in examples],
        "perception": {"src": data_uri(perception_png), "caption": PERCEPTION_CAPTION} if perception_png else None,
        "calibrations": calibrations,
        "n_bins": calibrations[0]["bins"] if calibrations else 20,
        "training": [{"title": f.title, "caption": f.caption, "src": data_uri(f.path)} for f in training],
        "config_yaml": yaml.dump(config, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False, allow_unicode=True),
    }
    html = render(context)
    write_text(output, html)
    return html


PERCEPTION_CAPTION = (
    "Averaging more posterior samples (left to right, doubling each step up to all samples, the MMSE) trades sharpness for "
    "accuracy. Left: PSNR, the pixel-wise agreement with the target, rises as the average forgets details the samples "
    "disagree on. Right: FRC resolution, the finest detail size still agreeing with the target (lower is finer). Dashed "
    "lines: the point estimators and the widefield input. A single sample looks most like a real confocal image, but "
    "for measurements the MMSE is the safer choice. Points are means over the test images, bars one standard deviation.")

EXAMPLE_CAPTION = ("Same crop in every panel. Grey panels share one intensity scale (normalised). 'predicted std' and "
                   "'|MMSE − target|' share one colour scale: bright areas in the std should coincide with bright areas "
                   "in the error if the uncertainty is informative.")

TRAINING_CAPTION = ("Training loss and validation loss (averaged EMA weights, fixed validation patches) per step, log scale.")


def example_figures(paths: list[str]) -> list[Figure]:
    return [Figure(f"Test image {Path(p).stem}", os.fspath(p), EXAMPLE_CAPTION) for p in paths]


def training_figures(paths: dict[str, str]) -> list[Figure]:
    return [Figure(f"Model {model}", os.fspath(p), TRAINING_CAPTION) for model, p in paths.items()]


def kernel_figure(png, metrics_tsv) -> Figure:
    """The learned blur kernel's plot (rule learn_kernel), captioned with its last kernel error when known."""
    rows = read_tsv(metrics_tsv)
    errors = rows["kernel_error"].dropna() if "kernel_error" in rows else []
    score = (f" Its relative L1 error against the true PSF after centre-of-mass alignment: {errors.iloc[-1]:.3f}."
             if len(errors) else "")
    return Figure("Learned blur kernel (DDM4IP)", os.fspath(png),
                  "The blur kernel learned from the unpaired degraded and clean sets, beside the true PSF when it is "
                  "known; the models and deconvolutions set to `learned` restore with it." + score)
