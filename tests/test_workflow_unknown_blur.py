"""The unknown-blur demo (DDM4IP stages 1-2 as rule learn_kernel, then a flow prior restoring with the
learned kernel) end to end through Snakemake."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from scipy import ndimage

from flowrestore.data.io import open_image
from flowrestore.data.pairing import read_rows

from fixtures import data_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "config" / "tiny_unknown_blur.yaml"


def anisotropic_gaussian(sigmas=(2.5, 1.5), angle=30.0, size=15) -> np.ndarray:
    """The demo's PSF from its definition: exp(-(u^2/s_u^2 + v^2/s_v^2)/2) on axes rotated by `angle`, sum 1."""
    r = size // 2
    y, x = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    a = math.radians(angle)
    u, v = math.cos(a) * y + math.sin(a) * x, -math.sin(a) * y + math.cos(a) * x
    k = np.exp(-0.5 * ((u / sigmas[0]) ** 2 + (v / sigmas[1]) ** 2))
    return k / k.sum()


def snakemake(tmp_path, *args, more=()):
    extra = tmp_path / "psf.yaml"  # the true PSF is the demo's file, read against this config file
    extra.write_text("kernel: {true_psf: data/psf.tif}\n"
                     "models:\n  true_psf:\n    method: flow_prior\n"
                     "    options: {task: deblur, psf: data/psf.tif, range: [0, 1000], steps: 4}\n"
                     "    net: {channels: 8, multipliers: [1, 2]}\n"
                     "evaluate: {psfs: {true PSF: data/psf.tif}}\n")
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "2",
               *args, "--configfile", str(TINY), str(data_config(tmp_path)), str(extra), *map(str, more)]
    return subprocess.run(command, capture_output=True, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
def test_unknown_blur_demo_learns_a_kernel_and_restores_with_it(tmp_path):
    result = snakemake(tmp_path)
    assert result.returncode == 0, result.stderr[-5000:]
    results = tmp_path / "results"
    true_psf = tifffile.imread(tmp_path / "data" / "psf.tif")
    np.testing.assert_allclose(true_psf, anisotropic_gaussian(), atol=1e-7)
    rows = read_rows(results / "pairs.tsv")
    inner = (slice(7, -7),) * 2  # away from the borders, where the blur's padding acts
    for r in rows:
        blurred, sharp = (np.asarray(open_image(tmp_path / r[role]).data, np.float64) for role in ("input", "target"))
        expected = ndimage.convolve(sharp, true_psf.astype(np.float64), mode="reflect")
        # Poisson shot noise on the blurred photo-electrons, read noise 2 e-, rounding to integers
        z = ((blurred - expected)[inner] ** 2 / (expected[inner] + 2.0**2 + 1 / 12)).mean()
        assert abs(z - 1) < 0.15, (r["pair_id"], z)

    kernel = tifffile.imread(results / "kernel" / "kernel.tif")
    assert kernel.shape == (15, 15) and kernel.sum() == pytest.approx(1.0, abs=1e-5) and (kernel >= 0).all()
    metrics = pd.read_csv(results / "kernel" / "metrics.tsv", sep="\t")
    assert list(metrics["stage"].unique()) == [1, 2] and metrics["kernel_error"].dropna().between(0, 2).all()
    assert (results / "kernel" / "kernel.png").stat().st_size > 0
    # unpaired: the degraded set is the test inputs, the clean set the train/val targets (other fields)
    state = torch.load(results / "kernel" / "work" / "last.pt", weights_only=False)
    split = {r["pair_id"]: r["split"] for r in rows}
    name = lambda path: Path(path).name.split(".")[0]  # noqa: E731
    assert {split[name(p)] for p in state["identity"]["degraded"]} == {"test"}
    assert {split[name(p)] for p in state["identity"]["clean"]} <= {"train", "val"}
    assert all("/input/" in p for p in state["identity"]["degraded"]) and all("/target/" in p for p in state["identity"]["clean"])

    summary = pd.read_csv(results / "evaluate" / "summary.tsv", sep="\t")
    assert set(summary["label"]) >= {"Wiener (learned kernel)", "Wiener (true PSF)", "Wiener (isotropic guess)",
                                     "prior MMSE", "true_psf MMSE"}
    assert (results / "report" / "report.html").exists()

    # a kernel learnt anew redoes the restorations that use it and the scores, not the prior's training
    longer = tmp_path / "longer.yaml"
    longer.write_text("kernel: {ddm4ip: {stage2_steps: 6}}\n")
    assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(snakemake(tmp_path, "-n"))
    again = snakemake(tmp_path, "-n", more=[longer])
    assert again.returncode == 0, again.stderr[-3000:]
    jobs = again.stdout + again.stderr
    assert "rule learn_kernel" in jobs or "learn_kernel" in jobs.split("Job stats:")[-1]
    stats = jobs.split("Job stats:")[-1]
    assert "predict_prepare" in stats and "evaluate" in stats and "\ntrain " not in stats


def test_a_learned_psf_without_kernel_learning_is_refused_in_one_line(tmp_path):
    off = tmp_path / "off.yaml"
    off.write_text("kernel: {learn: false}\n")
    result = snakemake(tmp_path, "-n", more=[off])
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "models.prior.options.psf is `learned`, but no kernel is learned. Fix: set kernel.learn: true" in message


def test_kernel_sets_must_be_disjoint(tmp_path):
    same = tmp_path / "same.yaml"
    same.write_text("kernel: {degraded_splits: [test, val], clean_splits: [train, val]}\n")
    result = snakemake(tmp_path, "-n", more=[same])
    assert result.returncode != 0 and "kernel.degraded_splits and kernel.clean_splits share a split" in result.stdout + result.stderr
