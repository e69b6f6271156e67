"""Shared set-up for the benchmarks: simulated data converted to OME-Zarr, like the demo makes."""

from __future__ import annotations

import atexit
import os
import resource
import shutil
import tempfile
from pathlib import Path

import numpy as np

from flowrestore.data.io import write_ome_zarr
from flowrestore.data.normalize import Normalization
from flowrestore.data.patches import Acquisition
from flowrestore.data.simulate import make_pair


def scratch(prefix: str = "flowrestore-bench-") -> Path:
    """A temporary folder removed when the benchmark exits (predictions of large images add up)."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return Path(folder)


def simulated_acquisitions(n: int, shape: tuple[int, ...], folder: str | None = None) -> list[Acquisition]:
    folder = Path(folder) if folder else scratch()
    out = []
    for i in range(n):
        wf, conf = make_pair(shape, 100 + i)
        paths = []
        for role, data in (("input", wf), ("target", conf)):
            path = folder / role / f"b{i}.ome.zarr"
            write_ome_zarr(path, data, "YX" if len(shape) == 2 else "ZYX", (0.1,) * len(shape))
            paths.append(str(path))
        norms = [Normalization(*map(float, np.percentile(d, [0.1, 99.9]))) for d in (wf, conf)]
        out.append(Acquisition(f"b{i}", paths[0], paths[1], *norms))
    return out


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def threads() -> int:
    return int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
