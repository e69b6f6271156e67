"""Faults injected for real: processes killed with SIGKILL while they work, then run again.

Nothing may be lost or corrupted: training resumes from its last checkpoint, an interrupted
prediction finishes to the same bytes as an uninterrupted one, a report is never left half
written, and a second run in the same directory is refused by Snakemake's lock without harming
the first.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import zarr

from flowrestore.analysis import evaluate as E
from flowrestore.models.checkpoint import load_checkpoint, load_model
from flowrestore.inference.predict import DONE_DIR, partial_path
from flowrestore.analysis.report import build_report
from flowrestore.data.simulate import make_pair
from flowrestore.training.loop import train_model

from fixtures import TINY_NET, digests, make_acquisitions, snakemake_command, write_tiff

CONFIG = """\
data: {folder: data, samples: data/samples.tsv}
models:
  care: {method: regression, net: {channels: 8, multipliers: [1, 2]}}
train: {steps: 150, batch_size: 2, patch_size: 32, val_every: 10, checkpoint_every: 10, val_batches: 1, warmup: 5}
"""
# One thread per job: on a small shared machine, threads waiting for each other slow training tenfold.
RUN = ("--cores", "2", "--set-threads", "train=1", "predict_shard=1")
MODEL = Path("results/models/care")
TIMEOUT = 600
STARTED: list[subprocess.Popen] = []


@pytest.fixture(scope="module", autouse=True)
def no_process_left():
    """A failed test must not leave its processes running."""
    yield
    for process in STARTED:
        if process.poll() is None:
            kill(process)


def start(command: list[str], log: Path) -> subprocess.Popen:
    """In a process group of its own, so that a kill reaches Snakemake and every job it started."""
    with open(log, "w") as out:
        STARTED.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
    return STARTED[-1]


def wait_for(condition, process: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"ended (exit {process.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {TIMEOUT} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL the whole group, as a power cut or the OOM killer would, and wait until it is gone."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError("processes of the killed group are still alive")


def snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_command(work, *args, configfiles=[work / "config.yaml"]),
                          capture_output=True, text=True, timeout=TIMEOUT)


# ---------------------------------------------------------------------------- training, and a second run


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    """Train through Snakemake, SIGKILL it mid-training, unlock, and run again; while the second run
    works (frozen with SIGSTOP, so that timing cannot decide the outcome), start a third one."""
    work = tmp_path_factory.mktemp("faults")
    (work / "data").mkdir()
    rows = []
    for i, split in enumerate(("train", "val", "test")):
        wf, confocal = make_pair((48, 48), 10 + i)
        write_tiff(work / "data" / f"a{i}_wf.tif", wf)
        write_tiff(work / "data" / f"a{i}_confocal.tif", confocal)
        rows.append(f"a{i}\ta{i}_wf.tif\ta{i}_confocal.tif\t{split}\n")
    (work / "data" / "samples.tsv").write_text("acquisition\tinput\ttarget\tsplit\n" + "".join(rows))
    (work / "config.yaml").write_text(CONFIG)
    inputs = digests(work / "data", work / "config.yaml")
    command = snakemake_command(work, str(MODEL / "checkpoint.pt"), *RUN, configfiles=[work / "config.yaml"])
    last = work / MODEL / "work" / "last.pt"

    first = start(command, work / "first.log")
    wait_for(last.exists, first, "a training checkpoint", work / "first.log")
    kill(first)
    killed = SimpleNamespace(files=sorted(str(p.relative_to(work / MODEL)) for p in (work / MODEL).rglob("*")
                                          if p.is_file()),
                             step=load_checkpoint(last)["step"])

    unlock = snakemake(work, "--unlock")
    second = start(command, work / "second.log")
    train_log = work / "results" / "logs" / "train" / "care.log"
    wait_for(lambda: train_log.exists() and "resuming" in train_log.read_text(), second, "the resumed training",
             work / "second.log")
    os.killpg(second.pid, signal.SIGSTOP)
    try:
        results_before = digests(work / "results")
        locks = sorted(os.listdir(work / ".snakemake" / "locks"))
        third = snakemake(work, str(MODEL / "checkpoint.pt"), *RUN)
        concurrent = SimpleNamespace(result=third, results_kept=digests(work / "results") == results_before,
                                     locks=locks, locks_after=sorted(os.listdir(work / ".snakemake" / "locks")))
    finally:
        os.killpg(second.pid, signal.SIGCONT)
    second.wait(timeout=TIMEOUT)
    return SimpleNamespace(work=work, killed=killed, unlock=unlock, second=second, concurrent=concurrent,
                           train_log=train_log.read_text(), inputs=inputs)


@pytest.mark.slow
def test_sigkill_during_training_then_rerun_resumes_from_the_last_checkpoint(training):
    work, killed = training.work, training.killed
    # Killed mid-training: the resumable state (and perhaps a temporary of its next save), no output.
    assert killed.step >= 10
    assert [f for f in killed.files if ".tmp-" not in f] == ["work/last.pt"], killed.files
    assert training.unlock.returncode == 0
    assert training.second.returncode == 0, (work / "second.log").read_text()[-3000:]
    assert re.search(rf"resuming care from step {killed.step}\b", training.train_log), training.train_log
    steps = [int(line.split("\t")[0]) for line in (work / MODEL / "metrics.tsv").read_text().splitlines()[1:]]
    assert steps == list(range(10, 151, 10))  # the steps before the kill are kept, none is done twice
    _, _, identity = load_model(work / MODEL / "checkpoint.pt")
    assert identity["name"] == "care"
    assert not [p for p in (work / "results").rglob(".*tmp-*")]
    assert digests(work / "data", work / "config.yaml") == training.inputs


@pytest.mark.slow
def test_second_run_in_the_same_directory_is_refused_and_harms_nothing(training):
    third = training.concurrent.result
    assert third.returncode != 0
    assert "cannot be locked" in third.stdout + third.stderr
    assert training.concurrent.results_kept
    assert training.concurrent.locks and training.concurrent.locks_after == training.concurrent.locks
    assert training.second.returncode == 0  # the first run went on to finish
    assert (training.work / MODEL / "checkpoint.pt").exists()


# ---------------------------------------------------------------------------- prediction

# Every run in a fresh process with one thread: a different thread count may change the last bits.
PREDICT = """\
import json, sys, torch
torch.set_num_threads(1)
from flowrestore.inference.predict import predict
print(json.dumps(predict(*sys.argv[1:4], settings={settings!r}, device="cpu")))
"""
SETTINGS = {"tile": 32, "overlap": 8, "block": [32, 32]}


def predict_command(checkpoint: Path, source: str, out: Path) -> list[str]:
    return [sys.executable, "-c", PREDICT.format(settings=SETTINGS), str(checkpoint), source, str(out)]


@pytest.mark.slow
def test_sigkill_during_predict_then_rerun_gives_identical_bytes(tmp_path):
    data = make_acquisitions(tmp_path / "data", n=2, shape=(48, 48))
    train_model("m", "regression", TINY_NET, dict(steps=2, batch_size=2, patch_size=32, val_every=2, val_batches=1),
                data[:1], data[1:], tmp_path / "model")
    checkpoint = tmp_path / "model" / "checkpoint.pt"
    source = write_tiff(tmp_path / "big.tif", make_pair((384, 384), 20)[0])  # 12 x 12 blocks
    reference = tmp_path / "reference.ome.zarr"
    uninterrupted = start(predict_command(checkpoint, source, reference), tmp_path / "reference.log")
    out, log = tmp_path / "killed.ome.zarr", tmp_path / "predict.log"
    process = start(predict_command(checkpoint, source, out), log)
    done = partial_path(out) / DONE_DIR
    wait_for(lambda: done.is_dir() and len(os.listdir(done)) >= 3, process, "three restored blocks", log)
    kill(process)
    finished = len(os.listdir(done))
    assert not out.exists() and finished < 12 * 12, "the prediction ended before the kill"

    rerun = subprocess.run(predict_command(checkpoint, source, out), capture_output=True, text=True, timeout=TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # Resumed: the finished blocks are not redone.
    assert json.loads(rerun.stdout.splitlines()[-1])["blocks"] == 12 * 12 - finished
    assert uninterrupted.wait(timeout=TIMEOUT) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    a, b = (zarr.open_group(str(p), mode="r")["0"][...] for p in (reference, out))
    assert a.tobytes() == b.tobytes()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no partial store or temporary left


# ---------------------------------------------------------------------------- the report

# Writes half of any report.html it is given, then hangs until killed: the kill lands mid-write.
HALF_WRITE = """\
import builtins, io, json, os, sys, time

real_open = io.open


class HalfThenHang:
    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        os.fsync(self.handle.fileno())
        real_open(sys.argv[2], "w").close()
        time.sleep(600)


def half_writing_open(file, mode="r", *args, **kwargs):
    handle = real_open(file, mode, *args, **kwargs)
    if "w" in mode and "report.html" in os.path.basename(os.fspath(file)):
        return HalfThenHang(handle)
    return handle


io.open = builtins.open = half_writing_open
from flowrestore.analysis.report import build_report

build_report(**json.loads(sys.argv[1]))
"""


@pytest.mark.slow
def test_sigkill_during_report_writing_leaves_no_half_html(tmp_path):
    from test_evaluate import make_run

    run = make_run(tmp_path / "run", shape=(64, 64), test=2, val=2)
    tables = {k: tmp_path / f"{k}.tsv" for k in ("metrics", "summary", "pd", "comparisons")}
    E.run(run["manifest"], run["convert"], run["predict"], run["models"], tables["metrics"], tables["summary"],
          tables["pd"], tables["comparisons"])
    output = tmp_path / "report" / "report.html"
    args = {"output": str(output), "config": {"models": {"hm": {"method": "guided_cfm"}}},
            "manifest": str(run["manifest"]), "metrics_tsv": str(tables["metrics"]),
            "summary_tsv": str(tables["summary"]), "comparisons_tsv": str(tables["comparisons"])}
    build_report(**args | {"title": "previous report"})
    previous = output.read_bytes()

    marker, log = tmp_path / "half-written", tmp_path / "report.log"
    process = start([sys.executable, "-c", HALF_WRITE, json.dumps(args), str(marker)], log)
    wait_for(marker.exists, process, "half of the report", log)
    kill(process)
    assert output.read_bytes() == previous  # the report in place is whole: the previous one
    [half] = [p for p in output.parent.iterdir() if p != output]  # the killed writer's temporary
    assert half.name.startswith(".report.html.tmp-") and half.stat().st_size < len(previous)

    html = build_report(**args)  # the rerun
    assert output.read_text() == html and html.rstrip().endswith("</html>")
    assert sorted(os.listdir(output.parent)) == ["report.html"]  # the stale temporary is gone
