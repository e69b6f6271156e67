"""Outputs appear whole or not at all: write under a temporary name in the same folder, then rename."""

from __future__ import annotations

import glob
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temp_sibling(path: str | os.PathLike) -> Path:
    """A hidden name in the same folder, so the final rename never crosses a file system."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def remove_stale(path: str | os.PathLike) -> None:
    """Remove the temporaries of `path` that a killed writer (SIGKILL, power loss) left behind.

    Safe because an output has one writer at a time (Snakemake runs one job per output).
    """
    path = Path(path)
    for old in glob.glob(os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.tmp-*")):
        remove(old)


def remove(path: str | os.PathLike) -> None:
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move a finished temporary file or folder to its final name."""
    tmp, path = Path(tmp), Path(path)
    if tmp.is_dir() and path.exists():
        # os.replace cannot overwrite a non-empty folder; the old result is stale by now.
        remove(path)
    os.replace(tmp, path)


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; it becomes `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = temp_sibling(path)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
