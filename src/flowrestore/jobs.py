"""The whole job without Snakemake: what `flowrestore train`, `predict` and `evaluate` run.

They chain the library functions the rule scripts call (scripts/*.py, workflow/rules/*.smk) and
write the workflow's results layout (`results/pairs.tsv`, `results/convert/{role}/{acquisition}.ome.zarr`,
`results/models/{model}/`), so a later Snakemake run on the same config reuses what they made.
Settings and defaults come from the config schema (config.schema_path()).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import yaml

from .config import check_config, defaults, load_schema, model_settings, resolve_paths, schema_path, with_defaults
from .errors import InputError

log = logging.getLogger("flowrestore")


def load_config(path: str | os.PathLike) -> dict:
    """The config file checked against the schema (one-line InputError), with every default filled in."""
    try:
        with open(path) as fh:
            config = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})", "give the path of a workflow config file") from exc
    except yaml.YAMLError as exc:
        raise InputError(path, f"is not valid YAML ({' '.join(str(exc).split())[:200]})",
                         "fix the syntax (indentation, colons, quotes)") from exc
    if not isinstance(config, dict):
        raise InputError(path, "is not a YAML mapping of settings", "see config/config.yaml for an example")
    check_config(config, schema_path(), [path])
    config = with_defaults(config, load_schema())
    resolve_paths(config, [path])  # relative paths are read against the config file, as in the workflow
    return config


def _stale(output: Path, *sources) -> bool:
    """True when `output` is missing or older than one of its sources (Snakemake's rule)."""
    if not output.exists():
        return True
    return any(Path(s).exists() and Path(s).stat().st_mtime > output.stat().st_mtime for s in sources)


def train_from_config(config_path, model: str | None = None, device: str | None = None,
                      progress: bool | None = None) -> list[Path]:
    """Pair, check, convert the train/val acquisitions and train every model of the config (or
    `model`); returns the checkpoints. Steps whose outputs are newer than their inputs are kept,
    and training resumes from its last state, as in the workflow."""
    from .data.io import convert
    from .data.pairing import check_pair, plan_pairs, write_manifest, write_rows
    from .data.patches import acquisitions_from_manifest
    from .training.loop import train_model

    config = load_config(config_path)
    models = model_settings(config, config_path)
    if model is not None and model not in models:
        raise InputError(config_path, f"has no model {model!r}", f"give one of {', '.join(models)} with --model")
    results = Path(config["results"])
    from .data.demo import demo_rows, make_demo

    demo = demo_rows(config["demo"], config["data"], config_path) if config["demo"]["make"] else None
    if demo and not all(Path(p).exists() for row in demo for p in (row[1], row[2], *row[4:5]) if p):
        log.info("simulating %d demo acquisitions (%s) in %s", config["demo"]["acquisitions"], config["demo"]["kind"],
                 config["data"]["folder"])
        make_demo(config["demo"], config["data"])
    pairs = plan_pairs(config["data"], demo)
    norm = config["normalize"]
    row_files = []
    for pair in pairs:
        row = results / "pairs" / f"{pair.acquisition}.tsv"
        if _stale(row, *(p for p in (pair.input, pair.target, pair.truth) if p)):
            log.info("checking the pair %s", pair.acquisition)
            write_rows([check_pair(pair, norm["low"], norm["high"], config["data"]["registration_tolerance"],
                                   config["data"]["pixel_size"])], row)
        row_files.append(str(row))
    rows = write_manifest(row_files, results / "pairs.tsv")
    by_name = {p.acquisition: p for p in pairs}
    for r in rows:
        if r["split"] in ("train", "val"):
            for role in ("input", "target"):
                source = getattr(by_name[r["pair_id"]], role)
                if source is None:  # a reference without an input
                    continue
                destination = results / "convert" / role / f"{r['pair_id']}.ome.zarr"
                if _stale(destination, source):
                    log.info("converting the %s of %s to OME-Zarr", role, r["pair_id"])
                    convert(source, destination, config["convert"]["chunks"], pixel_size=config["data"]["pixel_size"])
    images = str(results / "convert")
    checkpoints = []
    for name, settings in models.items():
        if model is not None and name != model:
            continue
        train = settings["train"] | ({"device": device} if device else {})
        out = results / "models" / name
        train_model(name, settings["method"], settings["net"], train, acquisitions_from_manifest(rows, images, "train"),
                    acquisitions_from_manifest(rows, images, "val"), out, progress=progress,
                    method_options=settings["options"])
        checkpoints.append(out / "checkpoint.pt")
    return checkpoints


def find_checkpoint(model: str | os.PathLike) -> Path:
    """A checkpoint file, or a model folder of the workflow holding `checkpoint.pt`."""
    path = Path(model)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise InputError(model, "is not a checkpoint", "give results/models/NAME/checkpoint.pt (or its folder) "
                         "of a trained model")
    return path


def predict_one(model, image, output, settings: dict, device: str, calibration=None, low: float | None = None,
                high: float | None = None, progress: bool | None = None) -> dict:
    """Restore one image or volume into `output` (OME-Zarr), applying `calibration` (the fit.json
    of rule calibrate) to the std when given; refuses a calibration fitted for another K before
    any work is done."""
    from .atomic import remove_stale
    from .inference.predict import predict

    checkpoint = find_checkpoint(model)
    if calibration is not None:
        from .analysis.calibration import load

        fitted = load(calibration)
        if fitted.samples != settings["samples"]:
            raise InputError(calibration, f"was fitted on predictions with {fitted.samples} samples, this one would "
                             f"have {settings['samples']}", f"give --samples {fitted.samples}, or no --calibration")
    if not str(output).endswith(".zarr"):
        raise InputError(output, "is not an OME-Zarr name", "end the output name with .ome.zarr")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    remove_stale(output)
    return predict(checkpoint, image, output, settings, device=device, progress=progress, calibration=calibration,
                   low=low, high=high)


def evaluate_one(prediction, target, input_image=None, low: float | None = None, high: float | None = None):
    """Metrics (analysis/metrics.py) of a prediction's mmse (and sample_0 when stored) and, when
    given, of the input, against `target`; one row per estimate (pandas DataFrame).

    As rule evaluate: every estimate is mapped to the target's units by matching percentiles
    (`low`, `high`): the prediction through the normalisation stored in its metadata.
    """
    import numpy as np
    import pandas as pd

    from .analysis import evaluate as E
    from .data.io import open_image

    norm = defaults("normalize")
    low, high = norm["low"] if low is None else low, norm["high"] if high is None else high
    info = E.prediction_info(prediction)
    target_image = open_image(target)
    E.check_shape(prediction, info["shape"], target, target_image.shape)
    truth = E.load_image(target)
    target_norm = tuple(float(v) for v in np.percentile(truth, [low, high]))
    norm = info.get("normalization")
    if not norm:
        raise InputError(prediction, "has no normalisation in its metadata", "restore it again with flowrestore predict")
    estimates = []
    if input_image is not None:
        raw = E.load_image(input_image)
        E.check_shape(input_image, raw.shape, target, truth.shape)
        estimates.append(("input", E.normalised(raw, *np.percentile(raw, [low, high]))))
    channels = E.read_channels(prediction, ["mmse", "sample_0"])
    estimates += [(name, E.normalised(value, norm["low"], norm["high"])) for name, value in channels.items()]
    pixel = E.lateral_pixel_size(target_image.pixel_size)
    rows = []
    for name, value in estimates:
        result = E.score(E.to_target_units(value, target_norm), truth, pixel)
        rows.append({"estimate": name, "pixel_size_um": pixel} | {c: result[c] for c in E.COLUMNS}
                    | {"missing": E.format_missing(result["missing"])})
    return pd.DataFrame(rows, columns=["estimate", "pixel_size_um"] + E.COLUMNS + ["missing"])
