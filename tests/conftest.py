"""Shared test setup. In CI (CI set, running as root) the system programs that some tests need,
Debian's chromium for the report check, are installed on first use instead of skipping."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def ensure_debian_package(executable: str, package: str) -> bool:
    """True if `executable` exists, installing `package` with apt first when in CI as root."""
    if Path(executable).exists() or shutil.which(executable):
        return True
    if os.environ.get("CI") and os.geteuid() == 0 and shutil.which("apt-get"):
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "timeout": 900}
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, **quiet)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env, **quiet)
    return Path(executable).exists() or bool(shutil.which(executable))
