"""Pair raw (input) and target acquisitions, check them, and write the manifest `pairs.tsv`.

Two steps on purpose: `plan_pairs` only looks at names (cheap, runs when the workflow is
parsed, so a missing partner or a duplicate stops the run before any job), and `check_pair`
reads the pixels of one pair (runs as one job per acquisition, so new acquisitions cost only
their own check).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from ..atomic import atomic_output
from ..errors import InputError
from .io import open_image
from .normalize import percentiles, subsample

SPLITS = ("train", "val", "test")
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
COLUMNS = ["pair_id", "split", "input", "target", "axes", "shape", "dtype", "pixel_size",
           "input_low", "input_high", "target_low", "target_high"]
# Registration is judged on a central crop: enough structure, bounded cost on huge images.
REGISTRATION_CROP = 512


@dataclass(frozen=True)
class Pair:
    acquisition: str
    input: str
    target: str
    split: str


def assign_split(acquisition: str, val: float, test: float, seed: int = 0) -> str:
    """A split from a hash of the name: adding acquisitions never moves existing ones."""
    digest = hashlib.sha256(f"{seed}:{acquisition}".encode()).hexdigest()
    u = int(digest[:12], 16) / float(16**12)
    return "test" if u < test else "val" if u < test + val else "train"


def _pattern_regex(pattern: str) -> re.Pattern:
    if pattern.count("{acquisition}") != 1:
        raise InputError(None, f"file-name pattern {pattern!r} must contain '{{acquisition}}' exactly once",
                         "write it like '{acquisition}_wf.tif' in config data.input_pattern / data.target_pattern")
    before, after = pattern.split("{acquisition}")
    esc = lambda s: re.escape(s).replace(r"\*", "[^/]*")  # noqa: E731
    return re.compile(f"{esc(before)}(?P<acquisition>[^/]+?){esc(after)}")


def match_files(folder: str | os.PathLike, pattern: str) -> dict[str, str]:
    """{acquisition: path} for every file (or zarr folder) in `folder` matching `pattern`."""
    regex = _pattern_regex(pattern)
    found: dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(str(folder)), pattern.replace("{acquisition}", "*")))):
        rel = os.path.relpath(path, folder)
        m = regex.fullmatch(rel)
        if m is None or os.path.basename(path).startswith("."):
            continue
        acq = m["acquisition"]
        if acq in found:
            raise InputError(path, f"acquisition {acq!r} matches two files ({found[acq]} and {path})",
                             "keep one file per acquisition and role, or make the pattern more specific")
        found[acq] = path
    return found


def pairs_from_folder(folder, input_pattern: str, target_pattern: str,
                      settings_file: str = "your config file") -> list[tuple[str, str, str, str | None]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "input folder does not exist", f"set data.folder in {settings_file} to your acquisitions (a relative "
                         "path is read from the folder of the config file that sets it)")
    inputs, targets = match_files(folder, input_pattern), match_files(folder, target_pattern)
    if not inputs and not targets:
        raise InputError(folder, f"no file matches {input_pattern!r} or {target_pattern!r}",
                         "put acquisitions in this folder or fix data.input_pattern/data.target_pattern")
    for acq, path in inputs.items():
        if acq not in targets:
            raise InputError(path, f"has no target partner (expected {target_pattern.replace('{acquisition}', acq)})",
                             "add the target acquisition or move the input out of the folder")
    for acq, path in targets.items():
        if acq not in inputs:
            raise InputError(path, f"has no input partner (expected {input_pattern.replace('{acquisition}', acq)})",
                             "add the input acquisition or move the target out of the folder")
    return [(acq, inputs[acq], targets[acq], None) for acq in sorted(inputs)]


def _inside(path: str, root: Path, sheet: Path) -> str:
    resolved = Path(os.path.normpath(root / path))
    if os.path.commonpath([resolved, root.absolute()]) != str(root.absolute()):
        raise InputError(sheet, f"path {path!r} points outside the data folder {root}",
                         "list files inside the data folder (relative paths) or move them there")
    return str(resolved)


def pairs_from_sheet(sheet, folder=None) -> list[tuple[str, str, str, str | None]]:
    """Rows of a TSV with columns acquisition, input, target and optional split."""
    sheet = Path(sheet)
    root = Path(os.path.normpath(Path(folder).absolute() if folder else sheet.parent.absolute()))
    try:
        with open(sheet, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(sheet, f"cannot be read ({exc})", "give a tab-separated text file") from exc
    missing = {"acquisition", "input", "target"} - set(rows[0] if rows else {})
    if missing or not rows:
        raise InputError(sheet, f"needs columns acquisition, input, target (missing: {sorted(missing) or 'all rows'})",
                         "write a tab-separated header 'acquisition<TAB>input<TAB>target[<TAB>split]' and one row per pair")
    out = []
    for i, row in enumerate(rows, start=2):
        split = (row.get("split") or "").strip() or None
        if split is not None and split not in SPLITS:
            raise InputError(sheet, f"line {i}: split {split!r} is not one of {SPLITS}", "use train, val or test")
        # A short row gives None for its missing cells; an empty path would name the folder itself.
        acq, inp, tgt = ((row.get(k) or "").strip() for k in ("acquisition", "input", "target"))
        empty = [k for k, v in (("acquisition", acq), ("input", inp), ("target", tgt)) if not v]
        if empty:
            raise InputError(sheet, f"line {i}: empty {', '.join(empty)}",
                             "fill in acquisition, input and target on every row (tab-separated)")
        files = [_inside(inp, root, sheet), _inside(tgt, root, sheet)]
        for listed, path in zip((inp, tgt), files):
            if not os.path.exists(path):
                raise InputError(sheet, f"line {i}: {listed!r} does not exist (looked in {root})",
                                 "fix the path (relative to the data folder) or add the file")
        out.append((acq, *files, split))
    return out


def plan_pairs(data: dict, raw: list[tuple[str, str, str, str | None]] | None = None,
               settings_file: str = "your config file") -> list[Pair]:
    """Pairs and splits from names alone, validated; `data` is the config's `data` section.

    `raw` gives (acquisition, input, target, split) rows for files that do not exist yet (the demo).
    """
    source = data.get("folder", "")
    if raw is not None:
        pass
    elif data.get("samples"):
        raw = pairs_from_sheet(data["samples"], data.get("folder") or None)
        source = data["samples"]
    else:
        raw = pairs_from_folder(data["folder"], data["input_pattern"], data["target_pattern"], settings_file)
        source = data["folder"]
    split_cfg = data.get("split", {})
    val, test, seed = split_cfg.get("val", 0.15), split_cfg.get("test", 0.25), split_cfg.get("seed", 0)
    seen_ids: dict[str, str] = {}
    seen_files: dict[str, str] = {}
    pairs = []
    for acq, inp, tgt, split in raw:
        if not ID_PATTERN.fullmatch(acq):
            raise InputError(inp, f"acquisition name {acq!r} has characters that are unsafe in file names",
                             "rename it using letters, digits, '.', '_' and '-' only")
        if acq in seen_ids:
            raise InputError(source, f"acquisition {acq!r} is listed twice", "give every acquisition a unique name")
        seen_ids[acq] = inp
        for f in (inp, tgt):
            key = os.path.normpath(os.path.abspath(f))
            if key in seen_files:
                raise InputError(f, f"is used by two pairs ({seen_files[key]} and {acq})", "use each file in one pair only")
            seen_files[key] = acq
        pairs.append(Pair(acq, inp, tgt, split or assign_split(acq, val, test, seed)))
    return pairs


def _registration_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.registration import phase_cross_correlation

    shift, _, _ = phase_cross_correlation(a, b, upsample_factor=1, normalization=None)
    return np.asarray(shift, dtype=float)


def _central_crop(shape: tuple[int, ...], size: int) -> tuple[slice, ...]:
    return tuple(slice(max(0, (s - size) // 2), max(0, (s - size) // 2) + min(s, size)) for s in shape)


def _compute(path: str, *arrays):
    """dask.compute, with a damaged file's decoding error (zlib, tifffile, zarr...) as an InputError."""
    try:
        return dask.compute(*arrays)
    except (InputError, MemoryError):
        raise
    except Exception as exc:
        raise InputError(path, f"cannot be read ({type(exc).__name__}: {str(exc).strip()[:200]})",
                         "the file is corrupt or truncated; export or copy it again") from exc


def check_pair(pair: Pair, low: float = 0.1, high: float = 99.9, registration_tolerance: float | None = 5.0) -> dict:
    """Read one pair's pixels, check them, and return its manifest row."""
    inp, tgt = open_image(pair.input), open_image(pair.target)
    if inp.shape != tgt.shape:
        raise InputError(pair.target, f"has shape {tgt.shape} but its input {pair.input} has shape {inp.shape}",
                         "pair acquisitions of the same field of view and size (crop or resample one of them)")
    stats = {}
    for role, img in (("input", inp), ("target", tgt)):
        data = img.data
        finite = da.isfinite(data).all() if data.dtype.kind == "f" else da.asarray(True)
        lo, hi, ok, sample = _compute(img.path, data.min(), data.max(), finite, subsample(data))
        if not ok:
            n_bad = int((~da.isfinite(data)).sum().compute())
            raise InputError(img.path, f"contains {n_bad} NaN or infinite pixels",
                             "replace them (e.g. Fiji: Process > Math > Remove NaNs) or crop them away")
        if lo == hi:
            raise InputError(img.path, f"is constant (every pixel is {lo})", "check the export; an empty image cannot be restored")
        stats[role] = percentiles(sample, low, high, img.path)
    if registration_tolerance is not None:
        crop = _central_crop(inp.shape, REGISTRATION_CROP)
        (a,), (b,) = _compute(inp.path, inp.data[crop]), _compute(tgt.path, tgt.data[crop])
        shift = _registration_shift(stats["input"].apply(a.astype(np.float32)), stats["target"].apply(b.astype(np.float32)))
        if np.linalg.norm(shift) > registration_tolerance:
            raise InputError(pair.target, f"is shifted by {tuple(round(float(s), 1) for s in shift)} px against its input "
                             f"(tolerance {registration_tolerance} px)",
                             "register the pair first, or raise data.registration_tolerance if the shift is expected")
    return {
        "pair_id": pair.acquisition, "split": pair.split, "input": pair.input, "target": pair.target,
        "axes": inp.axes, "shape": "x".join(map(str, inp.shape)), "dtype": str(inp.dtype),
        "pixel_size": ",".join(f"{p:g}" for p in inp.pixel_size),
        "input_low": stats["input"].low, "input_high": stats["input"].high,
        "target_low": stats["target"].low, "target_high": stats["target"].high,
    }


def write_rows(rows: list[dict], path: str | os.PathLike) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, COLUMNS, delimiter="\t", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)


def read_rows(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def write_manifest(row_files: list[str], path: str | os.PathLike, require_splits=SPLITS) -> list[dict]:
    """Gather per-pair rows into the manifest; every split must be non-empty and disjoint."""
    rows = [r for f in row_files for r in read_rows(f)]
    ids = [r["pair_id"] for r in rows]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise InputError(path, f"pairs {sorted(dup)} appear twice", "remove the duplicated acquisitions")
    for split in require_splits:
        if not any(r["split"] == split for r in rows):
            raise InputError(path, f"the {split} split is empty ({len(rows)} pairs in all)",
                             "add acquisitions, change data.split fractions or seed, or give a split column in the samples sheet")
    write_rows(sorted(rows, key=lambda r: (SPLITS.index(r["split"]), r["pair_id"])), path)
    return rows
