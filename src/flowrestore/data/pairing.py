"""Pair raw (input) and target acquisitions, check them, and write the manifest `pairs.tsv`.

Two steps on purpose: `plan_pairs` looks at names and at each input's header only (cheap, runs
when the workflow is parsed, so a missing partner, a duplicate or a 2-D acquisition among 3-D ones
stops the run before any job), and `check_pair` reads the pixels of one pair (runs as one job per
acquisition, so new acquisitions cost only their own check).

Pixel sizes are reported, not enforced: a size the file does not give (or gives implausibly) is
recorded as unknown, and sizes that differ between the two images of a pair or between acquisitions
by more than PIXEL_SIZE_TOLERANCE are a warning in the pair's log, the manifest's `note` column and
the log of rule pair. Not a refusal: the network and every metric compare pixels with pixels (and
the registration check guards that a pair is aligned pixel for pixel); a pixel size only labels the
outputs and the µm figures, and data sets mixing magnifications can be deliberate.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from ..atomic import atomic_output
from ..config import defaults
from ..errors import InputError
from .io import Image, open_image, with_pixel_size
from .normalize import percentiles, subsample

SPLITS = ("train", "val", "test")
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
COLUMNS = ["pair_id", "split", "input", "target", "truth", "quality", "axes", "shape", "dtype", "pixel_size",
           "input_low", "input_high", "target_low", "target_high", "note"]
# `input`: empty for a reference without an input (its restoration reads the reference; `input_low`/`input_high`
# are then the reference's). `truth`: empty without a noiseless image. `quality`: a label, may be empty.
# `pixel_size` column: µm per axis, comma-separated; UNKNOWN where the size is not known.
UNKNOWN = "unknown"
# Relative difference between pixel sizes reported as a mismatch (1%: beyond rounding in exports).
PIXEL_SIZE_TOLERANCE = 0.01
log = logging.getLogger(__name__)
# Registration is judged on a central crop: enough structure, bounded cost on huge images.
REGISTRATION_CROP = 512


@dataclass(frozen=True)
class Pair:
    """One acquisition: its roles' files and its split.

    `input`: the degraded image to restore, or None for a reference without one (data of noisy references
    only: a method that trains on the target role alone learns from it, and restores the reference itself).
    `target`: the high-quality partner, or a reference of whatever quality. `truth`: a noiseless image in the
    units of the image restored (the input, else the reference), read only to score restorations.
    `quality`: a label of the input's quality (e.g. its photon count); scores are also given per label.
    """

    acquisition: str
    input: str | None
    target: str
    split: str
    truth: str | None = None
    quality: str = ""

    @property
    def restored(self) -> str:
        """The image a restoration starts from: the input, or the reference where there is none."""
        return self.input or self.target


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


def pairs_from_folder(folder, input_pattern: str, target_pattern: str, settings_file: str = "your config file",
                      truth_pattern: str = "") -> list[tuple]:
    """(acquisition, input, target, split, truth, quality) rows of the files in `folder` (split None, quality "").

    An empty `input_pattern` means references only (input None); an empty `truth_pattern`, no truth. A truth
    is optional per acquisition, but one without its target is refused (a misnamed file, most likely).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "input folder does not exist", f"set data.folder in {settings_file} to your acquisitions (a relative "
                         "path is read from the folder of the config file that sets it)")
    inputs = match_files(folder, input_pattern) if input_pattern else None
    targets = match_files(folder, target_pattern)
    truths = match_files(folder, truth_pattern) if truth_pattern else {}
    if not inputs and not targets:
        raise InputError(folder, f"no file matches {input_pattern or target_pattern!r}"
                         + (f" or {target_pattern!r}" if input_pattern else ""),
                         "put acquisitions in this folder or fix data.input_pattern/data.target_pattern")
    for acq, path in (inputs or {}).items():
        if acq not in targets:
            raise InputError(path, f"has no target partner (expected {target_pattern.replace('{acquisition}', acq)})",
                             "add the target acquisition or move the input out of the folder")
    for acq, path in targets.items():
        if inputs is not None and acq not in inputs:
            raise InputError(path, f"has no input partner (expected {input_pattern.replace('{acquisition}', acq)})",
                             "add the input acquisition or move the target out of the folder (or set "
                             "data.input_pattern to '' if your data are references only)")
    for acq, path in truths.items():
        if acq not in targets:
            raise InputError(path, f"is a truth without its target (expected {target_pattern.replace('{acquisition}', acq)})",
                             "add the target acquisition or move the truth out of the folder")
    return [(acq, inputs[acq] if inputs is not None else None, targets[acq], None, truths.get(acq), "")
            for acq in sorted(targets)]


def _inside(path: str, root: Path, sheet: Path) -> str:
    resolved = Path(os.path.normpath(root / path))
    if os.path.commonpath([resolved, root.absolute()]) != str(root.absolute()):
        raise InputError(sheet, f"path {path!r} points outside the data folder {root}",
                         "list files inside the data folder (relative paths) or move them there")
    return str(resolved)


def pairs_from_sheet(sheet, folder=None) -> list[tuple]:
    """(acquisition, input, target, split, truth, quality) rows of a TSV with columns acquisition and target,
    and optional input (empty: a reference without an input), split, truth (a noiseless image, for scoring
    only) and quality (a label of the input's quality)."""
    sheet = Path(sheet)
    root = Path(os.path.normpath(Path(folder).absolute() if folder else sheet.parent.absolute()))
    try:
        with open(sheet, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(sheet, f"cannot be read ({exc})", "give a tab-separated text file") from exc
    missing = {"acquisition", "target"} - set(rows[0] if rows else {})
    if missing or not rows:
        raise InputError(sheet, f"needs columns acquisition, input, target (missing: {sorted(missing) or 'all rows'})",
                         "write a tab-separated header 'acquisition<TAB>input<TAB>target[<TAB>split]' and one row per pair")
    out = []
    for i, row in enumerate(rows, start=2):
        split = (row.get("split") or "").strip() or None
        if split is not None and split not in SPLITS:
            raise InputError(sheet, f"line {i}: split {split!r} is not one of {SPLITS}", "use train, val or test")
        # A short row gives None for its missing cells; an empty path would name the folder itself.
        acq, inp, tgt, truth, quality = ((row.get(k) or "").strip() for k in ("acquisition", "input", "target", "truth",
                                                                             "quality"))
        empty = [k for k, v in (("acquisition", acq), ("target", tgt)) if not v]
        if empty:
            raise InputError(sheet, f"line {i}: empty {', '.join(empty)}",
                             "fill in acquisition, input and target on every row (tab-separated; an empty input cell "
                             "marks a reference without an input)")
        files = {}
        for role, listed in (("input", inp), ("target", tgt), ("truth", truth)):
            if not listed:
                continue
            files[role] = _inside(listed, root, sheet)
            if not os.path.exists(files[role]):
                raise InputError(sheet, f"line {i}: {listed!r} does not exist (looked in {root})",
                                 "fix the path (relative to the data folder) or add the file")
        out.append((acq, files.get("input"), files["target"], split, files.get("truth"), quality))
    return out


def plan_pairs(data: dict, raw: list[tuple] | None = None, settings_file: str = "your config file") -> list[Pair]:
    """Pairs and splits from names alone, validated; `data` is the config's `data` section.

    `raw` gives (acquisition, input, target, split[, truth[, quality]]) rows for files that do not exist yet
    (the demo); input and truth may be None.
    """
    source = data.get("folder", "")
    if raw is not None:
        pass
    elif data.get("samples"):
        raw = pairs_from_sheet(data["samples"], data.get("folder") or None)
        source = data["samples"]
    else:
        raw = pairs_from_folder(data["folder"], data["input_pattern"], data["target_pattern"], settings_file,
                                data.get("truth_pattern", ""))
        source = data["folder"]
    split_cfg = data.get("split", {})
    val, test, seed = split_cfg.get("val", 0.15), split_cfg.get("test", 0.25), split_cfg.get("seed", 0)
    seen_ids: dict[str, str] = {}
    seen_files: dict[str, str] = {}
    pairs = []
    for acq, inp, tgt, split, *extra in raw:
        truth, quality = (list(extra) + [None, ""])[:2]
        if not ID_PATTERN.fullmatch(acq):
            raise InputError(inp or tgt, f"acquisition name {acq!r} has characters that are unsafe in file names",
                             "rename it using letters, digits, '.', '_' and '-' only")
        if acq in seen_ids:
            raise InputError(source, f"acquisition {acq!r} is listed twice", "give every acquisition a unique name")
        seen_ids[acq] = tgt
        for f in (f for f in (inp, tgt, truth) if f):
            key = os.path.normpath(os.path.abspath(f))
            if key in seen_files:
                raise InputError(f, f"is used by two pairs ({seen_files[key]} and {acq})", "use each file in one pair only")
            seen_files[key] = acq
        pairs.append(Pair(acq, inp, tgt, split or assign_split(acq, val, test, seed), truth, quality or ""))
    _check_dimensions(pairs)
    return pairs


def _check_dimensions(pairs: list[Pair]) -> None:
    """Refuse a data set that mixes 2-D and 3-D acquisitions, naming the odd one out.

    Reads each input's header only (no pixels, no chunk listing). A file that cannot be opened is
    left to its own check_pair job, which reports it together with any other bad file; one that does
    not exist yet (the demo, before it is simulated) is skipped. The target of a pair must have its
    input's shape, which check_pair checks.
    """
    ndim: dict[str, tuple[int, str]] = {}
    for pair in pairs:
        if not os.path.exists(pair.restored):
            continue
        try:
            image = open_image(pair.restored, check_chunks=False)
        except InputError:
            continue
        ndim[pair.restored] = (len(image.axes), "x".join(map(str, image.shape)))
    counts = {d: sum(n == d for n, _ in ndim.values()) for d in (2, 3)}
    if counts[2] and counts[3]:
        # The odd kind is the rarer one; on a tie, the kind of the later file by name.
        odd = 2 if counts[2] < counts[3] else 3 if counts[3] < counts[2] else ndim[max(ndim)][0]
        path, (_, shape) = next((p, v) for p, v in sorted(ndim.items()) if v[0] == odd)
        raise InputError(path, f"is {odd}-D ({shape}) but {counts[5 - odd]} of the {len(ndim)} inputs are "
                         f"{5 - odd}-D; one model restores either 2-D or 3-D images",
                         f"keep the {odd}-D acquisitions in another data folder (and config), or save them as "
                         f"{5 - odd}-D images")


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


def check_pair(pair: Pair, low: float | None = None, high: float | None = None,
               registration_tolerance: float | None = defaults("data")["registration_tolerance"],
               pixel_size: float | list[float] | None = None) -> dict:
    """Read one pair's pixels, check them, and return its manifest row.

    `low`/`high`: normalisation percentiles (None: the schema's `normalize` section).
    `pixel_size` (config data.pixel_size, µm) fills the sizes the files do not give. Unknown sizes
    and a pixel-size mismatch between input and target are warned about (log and `note`).
    A pair without an input is its target alone (the row's input percentiles are the target's); a truth
    is checked like the other roles (shape, finite, not constant, registered to the target).
    """
    norm = defaults("normalize")
    low, high = norm["low"] if low is None else low, norm["high"] if high is None else high
    roles = {role: with_pixel_size(open_image(path), pixel_size)
             for role, path in (("target", pair.target), ("input", pair.input), ("truth", pair.truth)) if path}
    tgt = roles["target"]
    inp = roles.get("input", tgt)
    factor = grid_factor(inp.shape, tgt.shape)
    if factor is None:
        raise InputError(pair.target, f"has shape {tgt.shape} but its input {pair.input} has shape {inp.shape}",
                         "pair acquisitions of the same field of view and size (crop or resample one of them), or, "
                         "for super-resolution, a target whose Y and X (or, for isotropic restoration, Z alone) are a whole "
                         "multiple of the input's")
    if "truth" in roles and roles["truth"].shape != tgt.shape:
        raise InputError(pair.truth, f"has shape {roles['truth'].shape} but its target {pair.target} has shape {tgt.shape}",
                         "give the noiseless image of the same field of view and size")
    stats = {}
    for role, img in roles.items():
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
    stats.setdefault("input", stats["target"])
    if registration_tolerance is not None:
        crop = _central_crop(inp.shape, REGISTRATION_CROP)
        fine = tuple(slice(c.start * f, c.stop * f) for c, f in zip(crop, factor))
        (b,) = _compute(tgt.path, tgt.data[fine])
        b = _integrate(b.astype(np.float32), factor)  # a finer target is compared on the input's grid
        for role in (r for r in ("input", "truth") if r in roles):
            (a,) = _compute(roles[role].path, roles[role].data[fine if role == "truth" else crop])
            a = _integrate(a.astype(np.float32), factor) if role == "truth" else a.astype(np.float32)
            shift = _registration_shift(stats[role].apply(a), stats["target"].apply(b))
            if np.linalg.norm(shift) > registration_tolerance:
                what = "its input" if role == "input" else f"its truth {pair.truth}"
                raise InputError(pair.target, f"is shifted by {tuple(round(float(s), 1) for s in shift)} input px against "
                                 f"{what} (tolerance {registration_tolerance} px)",
                                 "register the pair first, or raise data.registration_tolerance if the shift is expected")
    return {
        "pair_id": pair.acquisition, "split": pair.split, "input": pair.input or "", "target": pair.target,
        "truth": pair.truth or "", "quality": pair.quality,
        "axes": inp.axes, "shape": "x".join(map(str, inp.shape)), "dtype": str(inp.dtype),
        "pixel_size": format_pixel_size(tuple(None if p is None else p / f for p, f in zip(inp.pixel_size_um, factor))),
        "input_low": stats["input"].low, "input_high": stats["input"].high,
        "target_low": stats["target"].low, "target_high": stats["target"].high,
        "note": _pixel_size_notes(inp, tgt, factor),
    }


def grid_factor(input_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Per axis, target voxels per input voxel: all 1 for a same-size pair, (.., f, f) for a target f times
    finer in Y and X (super-resolution), (f, 1, 1) for a stack f times finer in Z (isotropic restoration);
    None when the shapes are not so related."""
    if len(input_shape) != len(target_shape) or any(t % i for i, t in zip(input_shape, target_shape)):
        return None
    factor = tuple(t // i for i, t in zip(input_shape, target_shape))
    lateral = not set(factor[:-2]) - {1} and factor[-1] == factor[-2]
    axial = len(factor) == 3 and factor[1:] == (1, 1)
    return factor if lateral or axial else None


def _integrate(a: np.ndarray, factor: tuple[int, ...]) -> np.ndarray:
    """The mean over each block of `factor` voxels (physics.AreaDownsample on one array)."""
    shape = [n for size, f in zip(a.shape, factor) for n in (size // f, f)]
    return a.reshape(shape).mean(axis=tuple(range(1, 2 * a.ndim, 2)))


def format_pixel_size(sizes: tuple[float | None, ...]) -> str:
    """The manifest's `pixel_size`: µm per axis, UNKNOWN for an unknown one (e.g. "unknown,0.1,0.1")."""
    return ",".join(UNKNOWN if p is None else f"{p:g}" for p in sizes)


def parse_pixel_size(text: str) -> tuple[float | None, ...]:
    """Inverse of format_pixel_size."""
    return tuple(None if p.strip() == UNKNOWN else float(p) for p in text.split(","))


def _differs(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) > PIXEL_SIZE_TOLERANCE * max(a, b)


def _pixel_size_notes(inp: Image, tgt: Image, factor: tuple[int, ...] = ()) -> str:
    """One warning line per problem with the pair's pixel sizes, joined with " | "; logged too.

    `factor`: target voxels per input voxel per axis; the target's pixel size is expected that much smaller."""
    notes = [f"{img.path}: {img.note}" for img in ((inp, tgt) if inp is not tgt else (tgt,)) if img.note]
    a, b = inp.pixel_size_um, tgt.pixel_size_um
    factor = factor or (1,) * len(a)
    scaled = f" once divided by the grid factor {'x'.join(map(str, factor))}" if max(factor) > 1 else ""
    if any(_differs(x, None if y is None else y * f) for x, y, f in zip(a, b, factor)):
        notes.append(f"{tgt.path}: pixel size {format_pixel_size(b)} µm differs from {format_pixel_size(a)} µm of its "
                     f"input {inp.path} by more than {PIXEL_SIZE_TOLERANCE:.0%}{scaled}; the input's is used")
    for note in notes:
        log.warning("%s", note)
    return " | ".join(notes)


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
    _compare_pixel_sizes(rows)
    write_rows(sorted(rows, key=lambda r: (SPLITS.index(r["split"]), r["pair_id"])), path)
    return rows


def _compare_pixel_sizes(rows: list[dict]) -> None:
    """Warn (log and the rows' `note`) about acquisitions whose pixel sizes differ by more than
    PIXEL_SIZE_TOLERANCE from the most common one, naming both input files."""
    texts = Counter(r["pixel_size"] for r in rows if r.get("pixel_size"))
    if not texts:
        return
    # The reference: the size most acquisitions give (the first such row by name on a tie).
    common = max(texts.values())
    reference = min((r for r in rows if texts.get(r.get("pixel_size")) == common), key=lambda r: r["pair_id"])
    ref_size = parse_pixel_size(reference["pixel_size"])
    for row in rows:
        size = parse_pixel_size(row["pixel_size"]) if row.get("pixel_size") else ()
        if len(size) != len(ref_size) or not any(_differs(a, b) for a, b in zip(size, ref_size)):
            continue
        note = (f"{row['input']}: pixel size {format_pixel_size(size)} µm differs from {format_pixel_size(ref_size)} µm "
                f"of {reference['input']} by more than {PIXEL_SIZE_TOLERANCE:.0%}")
        log.warning("%s", note)
        row["note"] = " | ".join(n for n in (row.get("note") or "", note) if n)
    for row in rows:
        if UNKNOWN in row.get("pixel_size", ""):
            log.warning("%s: pixel size %s µm (unknown axes are reported in pixels)", row["input"], row["pixel_size"])
