"""The `flowrestore` command as a user runs it (subprocesses): train from a config without
Snakemake, restore a TIFF given only a checkpoint, evaluate, and the one-line errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from flowrestore.analysis import metrics as M
from flowrestore.data.io import open_image
from flowrestore.data.simulate import write_demo

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())["properties"]
FAST = ["--samples", "2", "--nfe", "2", "--tile", "64", "--keep-samples", "1"]


def flowrestore(*args, cwd=None, check=True) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "flowrestore", *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"flowrestore {' '.join(map(str, args))} failed:\n{result.stderr[-4000:]}")
    return result


def one_line_error(result, *words):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowrestore: error: ") and "Fix:" in lines[0], result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny guided model trained by `flowrestore train` from the tests' workflow config."""
    work = tmp_path_factory.mktemp("cli")
    write_demo(work / "data", 8, (64, 64), seed=5)
    config = yaml.safe_load((ROOT / "tests" / "config" / "tiny.yaml").read_text())
    config["data"]["folder"] = "data"  # read from the config file's folder, as the workflow does
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    result = flowrestore("train", "config.yaml", "--model", "hazematching", "--no-progress", cwd=work)
    checkpoint = work / "results" / "models" / "hazematching" / "checkpoint.pt"
    assert result.stdout.strip() == str(Path("results/models/hazematching/checkpoint.pt"))
    return work, checkpoint


def test_version():
    from importlib.metadata import version

    assert flowrestore("--version").stdout.strip() == f"flowrestore {version('flowrestore')}"


@pytest.mark.parametrize("command, sections", [("predict", ("predict", "normalize")), ("evaluate", ("normalize",)),
                                               ("convert", ("convert",))])
def test_help_lists_every_option_with_the_schema_default(command, sections):
    text = " ".join(flowrestore(command, "--help").stdout.split())
    for section in sections:
        for name, option in SCHEMA[section]["properties"].items():
            if name in ("splits", "acquisitions", "shards"):  # which images and jobs: the workflow's business
                continue
            assert f"--{name.replace('_', '-')}" in text, name
            assert f"[{section}.{name}] (default: {option['default']})" in text, name


def test_train_writes_the_workflow_layout_and_only_the_model_asked(trained):
    work, checkpoint = trained
    assert checkpoint.exists() and (checkpoint.parent / "metrics.tsv").exists()
    assert not (work / "results" / "models" / "care").exists()
    manifest = (work / "results" / "pairs.tsv").read_text().splitlines()
    assert len(manifest) == 1 + 8
    converted = sorted(p.name for p in (work / "results" / "convert" / "input").iterdir())
    assert converted and all(name.endswith(".ome.zarr") for name in converted)


def test_predict_a_tiff_given_only_a_checkpoint(trained, tmp_path):
    work, checkpoint = trained
    alone = tmp_path / "model.pt"  # no model.json beside it, no results folder: only the checkpoint
    shutil.copy(checkpoint, alone)
    image = work / "data" / "demo001_wf.tif"
    out = tmp_path / "restored" / "demo001.ome.zarr"
    result = flowrestore("predict", alone, image, out, *FAST, "--no-progress")
    assert re.search(r"block 1 of 1 restored", result.stderr)  # log lines instead of a bar off a terminal
    group = zarr.open_group(str(out), mode="r")
    meta = group.attrs["flowrestore"]
    assert meta["channels"] == ["mmse", "std", "std_raw", "sample_0", "mean_1"]
    assert meta["calibration"]["method"] == "none" and "uncalibrated" in meta["calibration"]["note"]
    assert meta["sampling"]["samples"] == 2 and meta["sampling"]["nfe"] == 2 and meta["tile"] == [64, 64]
    raw = open_image(image)
    assert group["0"].shape == (5, *raw.shape)
    scale = group.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == [1.0, *raw.pixel_size]
    assert np.isfinite(group["0"][...]).all()


def test_predict_applies_a_calibration_and_refuses_one_for_another_k(trained, tmp_path):
    from flowrestore.analysis.calibration import Calibration, write_json

    work, checkpoint = trained
    image = work / "data" / "demo001_wf.tif"
    write_json({"calibration": Calibration("linear", {"a": 2.0, "b": 0.0}, "val", ("v",), 2).to_json()},
               tmp_path / "fit.json")
    out = tmp_path / "calibrated.ome.zarr"
    flowrestore("predict", checkpoint, image, out, *FAST, "--calibration", tmp_path / "fit.json")
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["flowrestore"]["calibration"]["method"] == "linear"
    std, raw = group["0"][1], group["0"][2]
    np.testing.assert_allclose(std, 2.0 * raw, rtol=1e-5)  # b = 0: the scale of the units drops out

    result = flowrestore("predict", checkpoint, image, tmp_path / "k.ome.zarr", "--samples", "4",
                         "--calibration", tmp_path / "fit.json", check=False)
    one_line_error(result, "fit.json", "2 samples", "--samples 2")
    assert not (tmp_path / "k.ome.zarr").exists()


def test_evaluate_scores_like_the_metrics_module(trained, tmp_path):
    work, checkpoint = trained
    image, target = work / "data" / "demo001_wf.tif", work / "data" / "demo001_confocal.tif"
    out = tmp_path / "p.ome.zarr"
    flowrestore("predict", checkpoint, image, out, *FAST)
    tsv = tmp_path / "metrics.tsv"
    flowrestore("evaluate", out, target, "--input", image, "--output", tsv)
    import pandas as pd

    table = pd.read_csv(tsv, sep="\t").set_index("estimate")
    assert list(table.index) == ["input", "mmse", "sample_0"]
    assert {"psnr", "ssim", "ms_ssim", "micro_ssim", "micro_ms3im", "frc_1/7_um"} <= set(table.columns)
    # The input row by hand: both images mapped to [0, 1] by their own 0.1/99.9 percentiles.
    x, t = (np.asarray(open_image(p).data, dtype=np.float64) for p in (image, target))
    lo, hi = np.percentile(t, [0.1, 99.9])
    x_in_target_units = lo + (x - np.percentile(x, 0.1)) / np.ptp(np.percentile(x, [0.1, 99.9])) * (hi - lo)
    assert table.loc["input", "psnr"] == pytest.approx(M.psnr(x_in_target_units, t), abs=1e-3)


def test_errors_are_one_line_naming_the_file(trained, tmp_path):
    work, checkpoint = trained
    image = work / "data" / "demo001_wf.tif"
    one_line_error(flowrestore("predict", checkpoint, tmp_path / "missing.tif", tmp_path / "o.ome.zarr", check=False),
                   "missing.tif", "file not found")
    one_line_error(flowrestore("predict", tmp_path / "none.pt", image, tmp_path / "o.ome.zarr", check=False),
                   "none.pt", "is not a checkpoint")
    one_line_error(flowrestore("predict", checkpoint, image, tmp_path / "o.ome.zarr", "--nfe", "0", check=False),
                   "--nfe", ">= 1")
    one_line_error(flowrestore("predict", checkpoint, image, tmp_path / "o.ome.zarr", "--tile", "64", "64", "64",
                               check=False), "demo001_wf.tif", "predict.tile gives 3 values")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"trian": {"steps": 3}}))
    one_line_error(flowrestore("train", bad, check=False), "bad.yaml", "unknown setting trian", "did you mean train")
    one_line_error(flowrestore("train", work / "config.yaml", "--model", "nope", check=False, cwd=work),
                   "config.yaml", "no model 'nope'", "hazematching")
    assert not (tmp_path / "o.ome.zarr").exists()
