"""The workflow end to end through Snakemake on tiny data (marked slow: a few minutes on 2 cores)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

from flowrestore.data.pairing import assign_split, read_rows
from flowrestore.inference.predict import read_prediction
from flowrestore.data.simulate import write_demo

from fixtures import run_snakemake

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "config" / "tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]


def snakemake(workdir: Path, *args: str, check: bool = True, configs=()) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, *args, config=TINY, check=check, configs=configs)


def planned_jobs(workdir: Path, *args: str, configs=()) -> dict[str, int]:
    """Job counts per rule of a dry run (from its 'Job stats' table); {} when nothing is to be done."""
    out = snakemake(workdir, *args, "-n", "--cores", "2", configs=configs).stdout
    if "Nothing to be done" in out:
        return {}
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


# Settings that change how a job runs, never what it writes (see flowrestore.config.RUNTIME).
RUNTIME_SETTINGS = {
    "train.workers": "train: {workers: 1}",
    "train.device": "train: {device: cpu}",
    "train.compile": "train: {compile: true}",
    "per-model train.workers": "models:\n  care: {method: regression, net: {channels: 8, multipliers: [1, 2]}, "
                               "train: {workers: 2}}\n  hazematching: {method: guided_cfm, net: {channels: 8, "
                               "multipliers: [1, 2]}}",
    "predict.device": "predict: {device: cpu}",
    "predict.batch": "predict: {batch: 3}",
    "predict.group": "predict: {group: 1}",
    "predict.shards": "predict: {shards: 2}",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNTIME_SETTINGS))
def test_runtime_settings_plan_nothing_after_a_finished_run(workdir, tmp_path, name):
    extra = tmp_path / "runtime.yaml"
    extra.write_text(RUNTIME_SETTINGS[name] + "\n")
    assert planned_jobs(workdir, configs=[extra]) == {}


@pytest.mark.slow
def test_another_spelling_of_the_data_folder_plans_nothing(workdir, tmp_path):
    # The absolute path of the same folder, from a config file elsewhere, and through a symbolic link.
    (tmp_path / "link").symlink_to(workdir / "data")
    for folder in (str(workdir / "data"), "link", str(workdir / "." / "data")):
        extra = tmp_path / "folder.yaml"
        extra.write_text(f"data:\n  folder: {folder}\n")
        assert planned_jobs(workdir, configs=[extra]) == {}, folder


@pytest.mark.slow
def test_one_more_acquisition_to_predict_plans_only_its_own_jobs(workdir):
    extra = workdir / "extra.yaml"  # its path is read from this file's folder
    extra.write_text("predict:\n  acquisitions: {extra1: data/demo000_wf.tif}\n")
    jobs = planned_jobs(workdir, configs=[extra])
    assert jobs == {"predict_prepare": 2, "predict_shard": 2, "predict_shards_done": 2, "predict": 2, "all": 1}, jobs


@pytest.mark.slow
def test_a_requested_prediction_is_written_while_the_calibration_is_refitted(workdir, tmp_path):
    # Snakemake alone ends such a run "100% done" having only refitted (snakemake/snakemake#4166).
    work = tmp_path / "copy"
    shutil.copytree(workdir, work, symlinks=True)
    extra = work / "extra.yaml"
    extra.write_text("predict:\n  acquisitions: {extra2: data/demo000_wf.tif}\ncalibrate: {bins: 7}\n")
    target = "results/predict/hazematching/extra2.ome.zarr"
    assert planned_jobs(work, target, configs=[extra]) == {"calibrate": 1, "predict_prepare": 1, "predict_shard": 1,
                                                          "predict_shards_done": 1, "predict": 1}
    snakemake(work, target, "--cores", "2", configs=[extra])
    assert read_prediction(work / target)["std"].shape == (64, 64)
    assert zarr.open_group(str(work / target), mode="r").attrs["flowrestore"]["calibration"]["method"] != "none"


@pytest.mark.slow
def test_new_acquisition_runs_only_new_jobs(workdir):
    # A name that the hash split sends to test: a new test acquisition must not retrain the models.
    name = next(f"new{i}" for i in range(100) if assign_split(f"new{i}", 0.15, 0.25, 1) == "test")
    (workdir / "data" / f"{name}_wf.tif").write_bytes((workdir / "data" / "demo000_wf.tif").read_bytes())
    (workdir / "data" / f"{name}_confocal.tif").write_bytes((workdir / "data" / "demo000_confocal.tif").read_bytes())
    jobs = planned_jobs(workdir)
    # The new acquisition's own jobs (one per model for predictions), and the summaries that include it;
    # no training, no refit of the calibration (val is unchanged), and nothing for the acquisitions already done.
    assert jobs == {"check_pair": 1, "pair": 1, "convert": 2, "predict_prepare": 2, "predict_shard": 2,
                    "predict_shards_done": 2, "predict": 2,
                    "example": 1, "evaluate": 1, "judge_calibration": 1, "report": 1, "all": 1}, jobs
    snakemake(workdir, "--cores", "2")
    assert name in {r["pair_id"] for r in read_rows(workdir / "results" / "pairs.tsv")}


def test_config_typo_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stpes: 5\n")
    result = snakemake(tmp_path, "-n", check=False, configs=[bad])
    assert result.returncode != 0
    assert "stpes" in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("setting,expected", [("predict:\n  samples: -3\n", "samples"),
                                              ("train:\n  lr: fast\n", "lr")])
def test_wrong_type_or_range_names_the_key(tmp_path, setting, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(setting)
    result = snakemake(tmp_path, "-n", check=False, configs=[bad])
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


def test_relative_paths_are_read_from_the_config_file_that_sets_them(tmp_path):
    # The case: data.folder ../data right relative to the config file, run with --directory w/x.
    write_demo(tmp_path / "data", 3, (32, 32), seed=1)
    (tmp_path / "conf").mkdir()
    conf = tmp_path / "conf" / "run.yaml"
    conf.write_text("data:\n  folder: ../data\npredict:\n  acquisitions: {extra: ../data/demo000_wf.tif}\n")
    work = tmp_path / "w" / "x"
    command = [*SNAKEMAKE, "-d", str(work), "-n", "--configfile", str(TINY), str(conf)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Job stats" in result.stdout
    # No rule makes the extra acquisition's input: the plan holds its jobs only if its file was found.
    assert "restoration of extra with care" in result.stdout
    # A folder that does not exist is named as read, with the config file that set it.
    conf.write_text("data:\n  folder: ../nodata\n")
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    line = next(line for line in text.splitlines() if "Fix:" in line)
    assert str(tmp_path / "nodata") in line and f"set data.folder in {conf}" in line, line


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
