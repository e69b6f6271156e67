"""Small data and models made on the spot (no download), and helpers to run and inspect the workflow."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

from flowrestore.data.io import write_ome_zarr
from flowrestore.data.normalize import Normalization
from flowrestore.data.patches import Acquisition
from flowrestore.data.simulate import make_pair

TINY_NET = {"channels": 8, "multipliers": [1, 2], "blocks": 1}
ROOT = Path(__file__).resolve().parents[1]


def make_acquisitions(folder: Path, n: int = 3, shape=(96, 96), chunks=None, seed: int = 0) -> list[Acquisition]:
    """Converted (OME-Zarr) simulated pairs with their percentile normalisation."""
    out = []
    for i in range(n):
        wf, conf = make_pair(shape, seed * 1000 + i)
        paths = []
        for role, data in (("input", wf), ("target", conf)):
            p = folder / role / f"a{i}.ome.zarr"
            p.parent.mkdir(parents=True, exist_ok=True)
            write_ome_zarr(p, data, "YX" if len(shape) == 2 else "ZYX", (0.1,) * len(shape), chunks)
            paths.append(str(p))
        norms = [Normalization(*map(float, np.percentile(d, [0.1, 99.9]))) for d in (wf, conf)]
        out.append(Acquisition(f"a{i}", paths[0], paths[1], norms[0], norms[1]))
    return out


def write_tiff(path: Path, data: np.ndarray, pixel_size=0.1) -> str:
    axes = "YX" if data.ndim == 2 else "ZYX"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": axes, "PhysicalSizeX": pixel_size, "PhysicalSizeY": pixel_size})
    return os.fspath(path)


TINY = ROOT / "tests" / "config" / "tiny.yaml"


def data_config(workdir: Path) -> Path:
    """`workdir/data.yaml` pointing data.folder at `workdir/data` (relative to the file itself)."""
    path = Path(workdir) / "data.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("data:\n  folder: data\n")
    return path


def snakemake_command(workdir: Path, *args: str, configfiles=()) -> list[str]:
    """The command line a user runs, on `workdir`, with these config files (later ones win).

    Right after tests/config/tiny.yaml comes the work directory's data config (data.folder: data).
    Targets go first in `args`: options such as --set-threads take every word that follows.
    """
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), *args]
    files = [f for c in map(Path, configfiles) for f in ([c, data_config(workdir)] if c == TINY else [c])]
    return command + ["--configfile", *map(str, files)] if files else command


def run_snakemake(workdir: Path, *args: str, config: Path = TINY, check: bool = True,
                  configs=()) -> subprocess.CompletedProcess:
    """Snakemake on `workdir` with `config` (a tiny demo config), `workdir/data.yaml` (data.folder: data),
    then `configs`; raises with the run's output tail when `check` and it fails."""
    files = [config, data_config(workdir), *configs]
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), *args,
                             "--configfile", *map(str, files)],
                            capture_output=True, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def digests(*roots: Path) -> dict[str, str]:
    """sha256 of every file at or below each root: inputs must come out of a run byte for byte."""
    out = {}
    for root in map(Path, roots):
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def files_besides_logs(results: Path) -> list[str]:
    """Every file a run left in `results` other than its logs (hidden temporaries included)."""
    if not results.exists():
        return []
    return sorted(str(p.relative_to(results)) for p in results.rglob("*")
                  if p.is_file() and p.relative_to(results).parts[0] != "logs")
