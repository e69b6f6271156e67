"""Errors that reach a rule script: one line on the console, the whole story in the rule's log file.

Each case runs a rule script's frame (`rule_script`) in its own interpreter, as Snakemake runs
scripts, so that what the console shows is what a user sees, uncaught tracebacks included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """\
import errno, os, pathlib, sys
from types import SimpleNamespace
from flowrestore.atomic import write_text
from flowrestore.cli import rule_script

out, log, kind = sys.argv[1:]

def failing_write(self, *args, **kwargs):
    # What write() raises on a full disk: an OSError without a file name.
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

def deep_library_bug():
    return {}["missing key"]

with rule_script(SimpleNamespace(log=[log], threads=1, output=[out])):
    if kind == "enospc":
        pathlib.Path.write_text = failing_write
        write_text(out, "rows")
    else:
        deep_library_bug()
"""


def run_script(tmp_path: Path, kind: str) -> tuple[subprocess.CompletedProcess, str, Path]:
    out = tmp_path / "results" / "pairs" / "a.tsv"
    log = tmp_path / "rule.log"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = os.environ | {"PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(out), str(log), kind], capture_output=True, text=True,
                            env=env, timeout=120)
    return result, log.read_text() if log.exists() else "", out


@pytest.mark.parametrize("kind", ["bug", "enospc"])
def test_every_error_ends_in_the_log_file_and_in_one_console_line(tmp_path, kind):
    result, log_text, out = run_script(tmp_path, kind)
    assert result.returncode == 1, result.stderr
    console = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(console) == 1, result.stderr
    assert "error:" in console[0] and "Traceback" not in result.stderr
    # The log file holds the line and the traceback down to the failing call.
    assert console[0].split("error:", 1)[1] in log_text
    assert "Traceback (most recent call last)" in log_text
    assert ("deep_library_bug" if kind == "bug" else "failing_write") in log_text
    assert not out.exists()


def test_a_full_disk_names_the_folder_and_says_a_rerun_resumes(tmp_path):
    result, _, out = run_script(tmp_path, "enospc")
    line = result.stderr.strip()
    assert f"{out.parent}: no space left on the device" in line
    assert "free space" in line and "rerun" in line and "resumes" in line


def test_an_unknown_error_names_its_type_and_the_log_file(tmp_path):
    result, _, _ = run_script(tmp_path, "bug")
    line = result.stderr.strip()
    assert "KeyError" in line and "missing key" in line and str(tmp_path / "rule.log") in line


def test_disk_full_takes_the_folder_of_the_file_named_by_the_error(tmp_path):
    import errno

    from flowrestore.cli import disk_full

    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "store" / "c" / "0"))
    assert disk_full(error, [str(tmp_path / "other.tsv")]).path == str(tmp_path / "store" / "c")
    assert disk_full(OSError(errno.EACCES, "denied"), []) is None
