"""The workflow on a real SLURM cluster (ci/slurm/start.sh: one node, one fake GPU), marked `slurm`.

    CI=1 .venv/bin/python -m pytest tests/test_slurm.py -m slurm      # as root: starts the cluster if needed

One tiny run goes through `--profile profiles/slurm` and, at the same time, the same run with
`--cores 2` on this machine: the cluster's jobs are checked in `sacct` (every rule submitted, GPU
requested and allocated where it should be, one job per prediction shard) and both runs must give
the same results. Then a longer training job is cancelled mid-way and must resume from its state.
Every wait has a time limit and jobs left behind are cancelled, so a hung cluster cannot hang CI.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flowrestore.data.pairing import assign_split, read_rows
from flowrestore.inference.predict import read_prediction
from flowrestore.data.simulate import write_demo
from fixtures import data_config

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "config" / "tiny.yaml"
# Site settings of the local CI cluster (see profiles/slurm/config.yaml): its node has 2 CPUs.
SITE = {"FLOWRESTORE_SLURM_ACCOUNT": "flowrestore", "FLOWRESTORE_SLURM_GPU_PARTITION": "gpu",
        "FLOWRESTORE_SLURM_MAX_CPUS": "2", "FLOWRESTORE_SLURM_MAX_MEM_MB": "4000"}
CLUSTER = [f"--profile={ROOT / 'profiles' / 'slurm'}", "--slurm-init-seconds-before-status-checks=5"]
MODELS = ("hazematching", "care")
GPU_RULES = {"train", "predict_shard"}
SHARDS = 2
# 3 acquisitions are the smallest demo with every split non-empty (demo000 train, demo001 test,
# demo002 val), and the runs stop at the predictions of the test acquisition (no evaluation or
# report): each SLURM job costs ~10 s of CPU here (two Snakemake start-ups and the rule script)
# and the node has 2 cores. That makes 19 jobs.
ACQUISITIONS = 3
TEST = [a for a in (f"demo{i:03d}" for i in range(ACQUISITIONS)) if assign_split(a, 0.15, 0.25, 1) == "test"]
# The guided model's test predictions carry the calibration fitted on its val predictions.
VAL = [a for a in (f"demo{i:03d}" for i in range(ACQUISITIONS)) if assign_split(a, 0.15, 0.25, 1) == "val"]
PREDICTIONS = len(MODELS) * len(TEST) + len(VAL)
TARGETS = ("results/pairs.tsv", *(f"results/predict/{m}/{a}.ome.zarr" for m in MODELS for a in TEST))
# Blocks of 32x32 (4 per image): each shard job restores 2 of them into the shared partial store.
RUN_CONFIG = f"predict:\n  shards: {SHARDS}\n  block: [32, 32]\n"
# One extra model, trained long enough to be cancelled mid-way (~0.1 s a step on this machine).
LONG_STEPS = 120
LONG_CONFIG = (f"models:\n  long:\n    method: guided_cfm\n    net: {{channels: 8, multipliers: [1, 2]}}\n"
               f"    train: {{steps: {LONG_STEPS}, checkpoint_every: 20, val_every: 50}}\n")

RUN_TIMEOUT = 480  # s, one workflow run through the cluster
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def _run(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _answers(cmd: list[str]) -> bool:
    try:
        return _run(cmd, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _env() -> dict[str, str]:
    return os.environ | SITE | {"PYTHONUNBUFFERED": "1"}


def _cancel_jobs_in(folder: Path) -> None:
    """scancel every queued or running job whose working directory lies under folder."""
    try:
        out = _run(["squeue", "-h", "-o", "%i|%Z"], timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return
    ids = [i for i, _, wd in (line.partition("|") for line in out.splitlines()) if wd.startswith(str(folder))]
    if ids:
        try:
            _run(["scancel", *ids], timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The local cluster, started if it does not answer (as root in CI); jobs left behind are cancelled."""
    if not _answers(["sinfo", "-h"]):
        allowed = os.environ.get("CI") or os.environ.get("FLOWRESTORE_SLURM") == "1"
        if not (hasattr(os, "geteuid") and os.geteuid() == 0 and allowed):
            pytest.skip("needs the local SLURM cluster: run as root with CI=1 or FLOWRESTORE_SLURM=1")
        started = _run(["bash", str(ROOT / "ci" / "slurm" / "start.sh")], timeout=600)
        if started.returncode != 0 or not _answers(["sinfo", "-h"]):
            pytest.fail(f"ci/slurm/start.sh could not start the cluster:\n{started.stdout[-2000:]}\n{started.stderr[-3000:]}")
    name = re.search(r"ClusterName\s*=\s*(\S+)", _run(["scontrol", "show", "config"], timeout=30).stdout)
    if not name or name.group(1) != os.environ.get("SLURM_CI_CLUSTER", "flowci"):
        pytest.skip("sinfo answers, but not from the local CI cluster (ci/slurm/start.sh): not submitting to it")
    base = tmp_path_factory.mktemp("slurm")
    yield base
    _cancel_jobs_in(base)


def command(workdir: Path, configs: list[Path], *args: str, targets: tuple[str, ...] = ()) -> list[str]:
    """A snakemake call with tests/config/tiny.yaml and then configs (one --configfile: a second replaces the first)."""
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), *targets,
            "--configfile", str(TINY), str(data_config(workdir)), *map(str, configs), *args]


def start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def finish(proc: subprocess.Popen, log: Path, timeout: float = RUN_TIMEOUT) -> str:
    """Wait for a snakemake run; past the timeout, stop it as Ctrl-C would (it then cancels its SLURM
    jobs and releases its lock) and fail. Returns its output; raises if it failed."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise AssertionError(f"snakemake ran past {timeout} s:\n{_tail(log.read_text())}") from None
    except BaseException:  # e.g. Ctrl-C on pytest
        stop(proc)
        raise
    output = log.read_text()
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{_tail(output)}")
    return output


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _tail(text, n: int = 4000) -> str:
    text = text.decode(errors="replace") if isinstance(text, bytes) else (text or "")
    return text[-n:]


def submitted_jobs(output: str) -> dict[str, tuple[str, str]]:
    """{SLURM job id: (rule, wildcards)} of the jobs a snakemake run submitted, from its output.

    The plugin logs each job to .snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log."""
    jobs = {}
    for jobid, log in SUBMITTED.findall(output):
        parts = Path(log).relative_to(Path(log.split("/slurm_logs/")[0]) / "slurm_logs").parts
        jobs[jobid] = (parts[0].removeprefix("rule_"), "/".join(parts[1:-1]))
    return jobs


def accounting(jobids, final: bool = True, timeout: float = 60) -> dict[str, dict[str, str]]:
    """sacct's record of each job (allocation lines only). Waits until slurmdbd has all of them."""
    fields = ["JobID", "JobName", "State", "Partition", "ReqTRES", "AllocTRES", "Comment"]
    deadline = time.monotonic() + timeout
    while True:
        out = _run(["sacct", "-X", "-n", "-P", f"--format={','.join(fields)}", "-j", ",".join(jobids)], timeout=30).stdout
        rows = {r["JobID"]: r for r in (dict(zip(fields, line.split("|", len(fields) - 1))) for line in out.splitlines())}
        done = set(jobids) <= set(rows) and not (final and any(r["State"] in ("PENDING", "RUNNING") for r in rows.values()))
        if done or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def comment_rule(comment: str) -> str | None:
    """The rule in the plugin's job comment, `rule_<rule>[_wildcards_<values>]` (stored when the
    cluster has AccountingStoreFlags=job_comment, as ci/slurm/start.sh sets)."""
    match = re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", comment.strip())
    return match.group(1) if match else None


@pytest.fixture(scope="module")
def runs(cluster):
    """The tiny workflow through the cluster and, concurrently, on this machine with --cores 2."""
    config = cluster / "run.yaml"
    config.write_text(RUN_CONFIG)
    work = {"slurm": cluster / "slurm", "local": cluster / "local"}
    write_demo(work["slurm"] / "data", ACQUISITIONS, (64, 64), seed=5)
    shutil.copytree(work["slurm"] / "data", work["local"] / "data")
    # The local run mostly fills the waits between cluster jobs (status checks, the one GPU).
    logs = {k: cluster / f"{k}.out" for k in work}
    local = start(command(work["local"], [config], "--cores", "2", targets=TARGETS), logs["local"],
                  os.environ | {"PYTHONUNBUFFERED": "1"})
    try:
        output = finish(start(command(work["slurm"], [config], *CLUSTER, targets=TARGETS), logs["slurm"], _env()),
                        logs["slurm"])
        finish(local, logs["local"])
    finally:
        stop(local)
    return work, output


def test_jobs_run_on_the_cluster_with_gpus_and_one_job_per_shard(runs):
    work, output = runs
    jobs = submitted_jobs(output)
    assert jobs, f"no job was submitted to SLURM:\n{_tail(output)}"
    acct = accounting(list(jobs))
    assert set(acct) == set(jobs), f"jobs missing from sacct: {sorted(set(jobs) - set(acct))}"
    assert len({r["JobName"] for r in acct.values()}) == 1, "the jobs of one run share its run id as job name"
    for jobid, (rule, wildcards) in jobs.items():
        row = acct[jobid]
        assert row["State"] == "COMPLETED", f"{rule} {wildcards} (job {jobid}): {row['State']}"
        if comment_rule(row["Comment"]) is not None:
            assert comment_rule(row["Comment"]) == rule, (row["Comment"], rule)
        gpu = rule in GPU_RULES
        assert ("gres/gpu=1" in row["ReqTRES"].split(",")) == gpu, f"{rule} (job {jobid}) requested {row['ReqTRES']}"
        assert ("gres/gpu=1" in row["AllocTRES"].split(",")) == gpu, f"{rule} (job {jobid}) got {row['AllocTRES']}"
        assert row["Partition"] == ("gpu" if gpu else "main"), f"{rule} (job {jobid}) ran in {row['Partition']}"

    per_rule = {}
    for rule, wildcards in jobs.values():
        per_rule.setdefault(rule, []).append(wildcards)
    assert set(per_rule) == {"check_pair", "pair", "convert", "train", "predict_prepare", "predict_shard", "predict",
                             "calibrate"}
    assert TEST == [r["pair_id"] for r in read_rows(work["slurm"] / "results" / "pairs.tsv") if r["split"] == "test"]
    assert len(per_rule["check_pair"]) == ACQUISITIONS
    assert len(per_rule["train"]) == len(MODELS)
    shards = per_rule["predict_shard"]
    assert len(shards) == len(set(shards)) == SHARDS * PREDICTIONS, shards
    assert len(per_rule["predict"]) == PREDICTIONS
    # Each shard job restored its own share of the blocks.
    for wildcards in shards:
        model, acquisition, shard = wildcards.rsplit("_", 2)
        log = (work["slurm"] / "results" / "logs" / "predict" / model / f"{acquisition}.shard{shard}.log").read_text()
        assert re.search(r"shard done: \{'blocks': [1-9]", log), log


def test_cluster_and_local_runs_give_the_same_results(runs):
    work, _ = runs
    slurm, local = (work[k] / "results" for k in ("slurm", "local"))
    assert (slurm / "pairs.tsv").read_text() == (local / "pairs.tsv").read_text()
    predictions = sorted(p.relative_to(local) for p in (local / "predict").glob("*/*.ome.zarr"))
    assert len(predictions) == PREDICTIONS, predictions
    assert predictions == sorted(p.relative_to(slurm) for p in (slurm / "predict").glob("*/*.ome.zarr"))
    for name in predictions:
        expected, got = read_prediction(local / name), read_prediction(slurm / name)
        assert list(got) == list(expected)
        for channel in expected:
            # Seeded training on the CPU, position-keyed sampling noise: equal up to float rounding.
            np.testing.assert_allclose(got[channel], expected[channel], rtol=1e-5, atol=1e-6, err_msg=f"{name} {channel}")


def _step(path: Path) -> int:
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except (OSError, RuntimeError, EOFError, KeyError):
        return -1


def test_cancelled_training_resumes_from_its_last_state(runs):
    """A train job cancelled mid-way (scancel, as in a preemption) is resubmitted by the profile's
    `retries: 1` and continues from results/models/<model>/work/last.pt instead of step 0."""
    work, _ = runs
    workdir = work["slurm"]  # converted data and manifest already there: only the new model trains
    config = workdir.parent / "long.yaml"
    config.write_text(LONG_CONFIG)
    model = workdir / "results" / "models" / "long"
    log_path = workdir.parent / "long.out"
    cmd = command(workdir, [workdir.parent / "run.yaml", config], *CLUSTER, targets=("results/models/long/checkpoint.pt",))
    proc = start(cmd, log_path, _env())
    try:
        # Wait for a saved state past step 20, then cancel the job that is writing it.
        deadline, cancelled = time.monotonic() + 240, None
        while cancelled is None:
            assert proc.poll() is None, f"snakemake ended before the job could be cancelled:\n{_tail(log_path.read_text())}"
            assert time.monotonic() < deadline, f"no training state after 240 s:\n{_tail(log_path.read_text())}"
            if (model / "work" / "last.pt").exists() and _step(model / "work" / "last.pt") >= 20:
                queue = _run(["squeue", "-h", "-o", "%i|%Z|%k"], timeout=30).stdout.splitlines()
                ids = [i for i, wd, comment in (line.split("|", 2) for line in queue)
                       if wd.rstrip("/") == str(workdir) and comment.startswith("rule_train")]
                assert len(ids) == 1, f"expected one train job in the queue: {queue}"
                assert _run(["scancel", ids[0]], timeout=30).returncode == 0
                cancelled = ids[0]
            time.sleep(0.2)
        assert not (model / "checkpoint.pt").exists(), "training finished before it was cancelled: raise LONG_STEPS"
        # The profile's status command (squeue) sees the job CANCELLED, and retries: 1 resubmits it.
        output = finish(proc, log_path)
    finally:
        stop(proc)

    jobs = submitted_jobs(output)
    assert [rule for rule, _ in jobs.values()] == ["train", "train"], jobs
    acct = accounting(list(jobs))
    assert acct[cancelled]["State"].startswith("CANCELLED"), acct[cancelled]
    (retry,) = set(jobs) - {cancelled}
    assert acct[retry]["State"] == "COMPLETED", acct[retry]
    assert "gres/gpu=1" in acct[retry]["AllocTRES"].split(",")

    resumed = re.search(r"resuming long from step (\d+)", (workdir / "results" / "logs" / "train" / "long.log").read_text())
    assert resumed, "the resubmitted job started from step 0"
    assert 20 <= int(resumed.group(1)) < LONG_STEPS
    assert _step(model / "checkpoint.pt") == LONG_STEPS
    assert _step(model / "work" / "last.pt") == LONG_STEPS
