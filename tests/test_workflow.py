"""The workflow end to end through Snakemake on tiny data (marked slow: a few minutes on 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowrestore.data.pairing import assign_split, read_rows
from flowrestore.inference.predict import read_prediction
from flowrestore.data.simulate import write_demo

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "config" / "tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile", str(TINY)]


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*SNAKEMAKE, "-d", str(workdir), *args], capture_output=True, text=True,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"})
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def planned_jobs(workdir: Path) -> dict[str, int]:
    """Job counts per rule of a dry run (from its 'Job stats' table)."""
    out = snakemake(workdir, "-n", "--cores", "2").stdout
    table = out.split("Job stats:")[1].split("total")[0]
    return {line.split()[0]: int(line.split()[1]) for line in table.strip().splitlines()[2:]}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("workflow")
    write_demo(work / "data", 8, (64, 64), seed=5)
    snakemake(work, "--cores", "2")
    return work


@pytest.mark.slow
def test_demo_chain_runs_end_to_end(workdir):
    rows = read_rows(workdir / "results" / "pairs.tsv")
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    for r in rows:
        for role in ("input", "target"):
            assert (workdir / "results" / "convert" / role / f"{r['pair_id']}.ome.zarr" / ".zattrs").exists()
    for model in ("hazematching", "care"):
        assert (workdir / "results" / "models" / model / "checkpoint.pt").exists()
        for r in rows:
            pred = workdir / "results" / "predict" / model / f"{r['pair_id']}.ome.zarr"
            assert pred.exists() == (r["split"] in ("val", "test"))
    pred = read_prediction(next((workdir / "results" / "predict" / "hazematching").glob("*.ome.zarr")))
    assert {"mmse", "std", "sample_0"} <= set(pred)
    # Nothing left to do, and no temporary markers or partial stores left behind.
    assert "Nothing to be done" in snakemake(workdir, "-n", "--cores", "2").stdout
    assert not list((workdir / "results").rglob("*.partial")) and not list((workdir / "results").rglob(".*.tmp-*"))


@pytest.mark.slow
def test_new_acquisition_runs_only_new_jobs(workdir):
    # A name that the hash split sends to test: a new test acquisition must not retrain the models.
    name = next(f"new{i}" for i in range(100) if assign_split(f"new{i}", 0.15, 0.25, 1) == "test")
    (workdir / "data" / f"{name}_wf.tif").write_bytes((workdir / "data" / "demo000_wf.tif").read_bytes())
    (workdir / "data" / f"{name}_confocal.tif").write_bytes((workdir / "data" / "demo000_confocal.tif").read_bytes())
    jobs = planned_jobs(workdir)
    # The new acquisition's own jobs (one per model for predictions), and the summaries that include it;
    # no training, no refit of the calibration (val is unchanged), and nothing for the acquisitions already done.
    assert jobs == {"check_pair": 1, "pair": 1, "convert": 2, "predict_prepare": 2, "predict_shard": 2, "predict": 2,
                    "example": 1, "evaluate": 1, "judge_calibration": 1, "report": 1, "all": 1}, jobs
    snakemake(workdir, "--cores", "2")
    assert name in {r["pair_id"] for r in read_rows(workdir / "results" / "pairs.tsv")}


def test_config_typo_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stpes: 5\n")
    result = snakemake(tmp_path, "-n", "--configfile", str(bad), check=False)
    assert result.returncode != 0
    assert "stpes" in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("setting,expected", [("predict:\n  samples: -3\n", "samples"),
                                              ("train:\n  lr: fast\n", "lr")])
def test_wrong_type_or_range_names_the_key(tmp_path, setting, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(setting)
    result = snakemake(tmp_path, "-n", "--configfile", str(bad), check=False)
    assert result.returncode != 0
    text = result.stderr + result.stdout
    assert expected in text and "bad.yaml" in text and "Fix:" in text


@pytest.mark.parametrize("setting,words", [
    # The case: a 3-level network (factor 4) and a tile of 90.
    ("models:\n  m: {method: regression, net: {multipliers: [1, 2, 4]}}\npredict:\n  tile: 90\n",
     ("predict.tile: 90 is not a multiple of 4", "model m", "e.g. 88 or 92")),
    ("predict:\n  tile: [64, 30]\n", ("predict.tile: [64, 30] is not a multiple of 4",)),
    ("predict:\n  tile: 64\n  overlap: 40\n", ("predict.overlap: 40 is more than half the tile 64",)),
    ("models:\n  m: {method: regression, train: {patch_size: 30}}\n", ("models.m.train.patch_size: 30",)),
])
def test_sizes_the_network_cannot_take_stop_the_run_in_one_line(tmp_path, setting, words):
    write_demo(tmp_path / "data", 3, (32, 32), seed=1)
    bad = tmp_path / "sizes.yaml"
    bad.write_text("data: {folder: data}\n" + setting)
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "-n",
                             "--configfile", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    lines = [line for line in text.splitlines() if "Fix:" in line]
    assert len(lines) == 1 and "Traceback" not in text, text
    assert str(bad) in lines[0] and all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "results").exists()


def test_missing_partner_stops_before_any_job(tmp_path):
    write_demo(tmp_path / "data", 3, (32, 32), seed=1)
    (tmp_path / "data" / "demo001_confocal.tif").unlink()
    result = snakemake(tmp_path, "-n", check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "demo001_wf.tif" in text and "Fix:" in text


def test_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True)
    assert "Congratulations" in result.stdout + result.stderr, result.stdout[-3000:]
