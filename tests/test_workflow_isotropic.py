"""The isotropic demo (demo.kind isotropic, flow_prior task isotropic) end to end through Snakemake."""

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
TINY = ROOT / "tests" / "config" / "tiny_isotropic.yaml"


@pytest.mark.slow
def test_isotropic_demo_runs_end_to_end(tmp_path):
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "2",
               "--configfile", str(TINY), str(data_config(tmp_path))]
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr[-5000:]
    rows = read_rows(tmp_path / "results" / "pairs.tsv")
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    for r in rows:
        coarse, fine = (open_image(tmp_path / r[role]) for role in ("input", "target"))
        assert fine.shape == (32, 32, 32) and coarse.shape == (8, 32, 32)
        assert coarse.pixel_size == pytest.approx((0.4, 0.1, 0.1)) and r["pixel_size"] == "0.1,0.1,0.1"
        # the input is the target's slab means (photo-electrons) plus Poisson and read noise (2 e-, then
        # rounding): its residual from the 4-plane means has the variance that noise model gives
        slabs = np.asarray(fine.data, np.float64).reshape(8, 4, 32, 32).mean(1)
        z = ((np.asarray(coarse.data, np.float64) - slabs) ** 2 / (slabs + 2.0**2 + 1 / 12)).mean()
        assert abs(z - 1) < 0.1, z
        pred = tmp_path / "results" / "predict" / "prior" / f"{r['pair_id']}.ome.zarr"
        assert pred.exists() == (r["split"] in ("val", "test"))
        if pred.exists():
            assert read_prediction(pred)["mmse"].shape == (32, 32, 32)
            scale = zarr.open_group(str(pred), mode="r").attrs["multiscales"][0]["datasets"][0]
            assert scale["coordinateTransformations"][0]["scale"][-3:] == pytest.approx([0.1, 0.1, 0.1])
    summary = pd.read_csv(tmp_path / "results" / "evaluate" / "summary.tsv", sep="\t")
    assert set(summary["label"]) >= {"input (cubic axial x4)", "input (linear axial x4)", "prior MMSE"}
    assert summary["frc_axial_1/7_um_mean"].notna().all()
    assert (tmp_path / "results" / "report" / "report.html").exists()
