"""The denoising demo through Snakemake (tests/config/tiny_denoise.yaml): references alone teach the models,
the truth only scores them (issue 22)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from flowrestore.analysis.evaluate import read_tsv
from flowrestore.analysis.metrics import psnr
from flowrestore.data.pairing import read_rows
from flowrestore.inference.predict import read_prediction
from flowrestore.models.checkpoint import load_model

from fixtures import run_snakemake

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "config" / "tiny_denoise.yaml"


def snakemake(workdir: Path, *args: str, check: bool = True, configs=()) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, *args, config=TINY, check=check, configs=configs)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("denoise")
    snakemake(work, "--cores", "2")
    return work


@pytest.mark.slow
def test_denoise_demo_runs_end_to_end(workdir):
    results = workdir / "results"
    # the manifest's paths are relative to the work directory
    rows = {r["pair_id"]: {k: str(workdir / v) if k in ("input", "target", "truth") and v else v for k, v in r.items()}
            for r in read_rows(results / "pairs.tsv")}
    test = sorted(a for a, r in rows.items() if r["split"] == "test")
    assert test == ["demo003", "demo007"] and [rows[a]["quality"] for a in test] == ["25 photons", "50 photons"]
    assert all(r["truth"].endswith("_truth.tif") for r in rows.values())
    # The models read references alone: no train or val input and no truth but the test's is ever converted.
    for role in ("input", "truth"):
        assert sorted(p.name for p in (results / "convert" / role).iterdir()) == [f"{a}.ome.zarr" for a in test]
    assert "Nothing to be done" in snakemake(workdir, "-n", "--cores", "2").stdout

    # Each step's state is stored, and equals the method's own steps run on the input in network units.
    method, net, _ = load_model(results / "models" / "relative_flow" / "checkpoint.pt")
    norm = method.normalization()
    raw = tifffile.imread(rows["demo003"]["input"]).astype(np.float32)
    with torch.no_grad():
        x0 = torch.from_numpy(norm.apply(raw))[None, None]
        states = [norm.invert(s[0, 0].numpy()) for s in method.trajectory(method.field(net, x0), x0)]
    stored = read_prediction(results / "predict" / "relative_flow" / "demo003.ome.zarr")
    assert len(states) == 3 and {"mmse", "step_1", "step_2"} == set(stored)
    for name, state in zip(("step_1", "step_2", "mmse"), states):
        np.testing.assert_allclose(stored[name], state, rtol=1e-4, atol=1e-3 * float(np.ptp(state)))

    # Scores are against the truth, in the input's raw units, per input quality.
    quality = read_tsv(results / "evaluate" / "quality.tsv")
    assert list(quality["quality"].unique()) == ["25 photons", "50 photons"]
    for acq in test:
        truth = tifffile.imread(rows[acq]["truth"])
        want = psnr(tifffile.imread(rows[acq]["input"]).astype(np.float32), truth)
        got = quality[(quality["quality"] == rows[acq]["quality"]) & (quality["model"] == "input")]["psnr_mean"]
        assert float(got.iloc[0]) == pytest.approx(want, abs=1e-4)
    mine = quality[(quality["quality"] == "25 photons") & (quality["model"] == "relative_flow")]
    assert sorted(mine["estimate"]) == ["mmse", "step_1", "step_2"]
    assert set(quality[quality["model"] == "naive"]["estimate"]) == {"mmse"}
    html = (results / "report" / "report.html").read_text()
    assert 'id="quality-table"' in html and 'id="steps-table"' in html and "noiseless <b>truth</b>" in html


def test_references_alone_restore_the_references_and_score_nothing(tmp_path):
    """Without inputs and truth the models still train and restore (the test references); nothing can be scored,
    so there is no evaluation and no report. A model of a paired method is refused before any job."""
    from flowrestore.data.denoise_demo import write
    from flowrestore.data.pairing import assign_split

    names = write(tmp_path / "data", 8, (64, 64), {"input": "_input.tif", "target": "_reference.tif", "truth": "_truth.tif"})
    for path in [*(tmp_path / "data").glob("*_input.tif"), *(tmp_path / "data").glob("*_truth.tif")]:
        os.remove(path)
    alone = tmp_path / "alone.yaml"
    alone.write_text('demo: {make: false}\ndata:\n  input_pattern: ""\n  truth_pattern: ""\n')
    out = snakemake(tmp_path, "-n", "--cores", "2", configs=[alone]).stdout
    table = out.split("Job stats:")[1].split("total")[0]
    jobs = {line.split()[0]: int(line.split()[1]) for line in table.strip().splitlines()[2:]}
    n_test = sum(assign_split(n, 0.15, 0.25, 0) == "test" for n in names)
    assert n_test and jobs["predict"] == 2 * n_test and jobs["convert"] == 8
    assert "evaluate" not in jobs and "report" not in jobs
    paired = tmp_path / "paired.yaml"
    paired.write_text(alone.read_text() + "models:\n  care: {method: regression}\n")
    result = snakemake(tmp_path, "-n", "--cores", "2", check=False, configs=[paired])
    assert result.returncode != 0 and "model care (method regression) trains on input/target pairs" in result.stdout + result.stderr
