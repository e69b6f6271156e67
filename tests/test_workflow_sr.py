"""The super-resolution demo (demo.kind super_resolution, model flow_prior) end to end through Snakemake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from flowrestore.data.io import open_image
from flowrestore.data.pairing import read_rows
from flowrestore.inference.predict import read_prediction

from fixtures import data_config

ROOT = Path(__file__).resolve().parents[1]
TINY_SR = ROOT / "tests" / "config" / "tiny_sr.yaml"


@pytest.mark.slow
def test_super_resolution_demo_runs_end_to_end(tmp_path):
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "2",
               "--configfile", str(TINY_SR), str(data_config(tmp_path))]
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr[-5000:]
    rows = read_rows(tmp_path / "results" / "pairs.tsv")
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    for r in rows:
        low, high = (open_image(tmp_path / r[role]) for role in ("input", "target"))
        assert high.shape == (64, 64) and low.shape == (16, 16)
        assert low.pixel_size == pytest.approx((0.4, 0.4)) and r["pixel_size"] == "0.1,0.1"
        pred = tmp_path / "results" / "predict" / "prior" / f"{r['pair_id']}.ome.zarr"
        assert pred.exists() == (r["split"] in ("val", "test"))
        if pred.exists():
            assert read_prediction(pred)["mmse"].shape == (64, 64)
            scale = zarr.open_group(str(pred), mode="r").attrs["multiscales"][0]["datasets"][0]
            assert scale["coordinateTransformations"][0]["scale"][-2:] == pytest.approx([0.1, 0.1])
            assert np.isfinite(read_prediction(pred)["std"]).all()
    summary = pd.read_csv(tmp_path / "results" / "evaluate" / "summary.tsv", sep="\t")
    assert set(summary["label"]) >= {"input (bicubic x4)", "prior MMSE"}
    assert (tmp_path / "results" / "report" / "report.html").exists()
