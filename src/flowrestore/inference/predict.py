"""Restore a whole 2D/3D acquisition block by block into an OME-Zarr image.

Three steps, so a cluster can scatter the work:
  `prepare`  creates the partial store `.NAME.partial` next to the output (idempotent: a store
             left by an interrupted run with the same model, input and settings is kept);
  `run_shard` restores the blocks of one shard (block index modulo shards), skipping blocks
             already marked done, and marks each block after its chunks are written;
  `finalize` checks every block is done, writes the metadata and renames the store into place.
Blocks are chunk-aligned, so shards write disjoint chunk files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import zarr
from tqdm import tqdm

from ..atomic import publish, remove, write_text
from ..errors import InputError
from ..data.io import create_ome_zarr, default_chunks, open_image
from ..data.normalize import Normalization, measure
from ..config import defaults, settings as config_settings
from ..data.ome_zarr import channel_windows, finish_image
from .sampling import SamplingConfig
from .tiling import make_plan, per_axis_values, size_problem, sizes

log = logging.getLogger(__name__)

PLAN_FILE = "flowrestore-plan.json"
DONE_DIR = "blocks-done"


def partial_path(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(f".{output.name}.partial")


def _file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def channel_names(stochastic: bool, sampling: SamplingConfig, states: int = 1) -> list[str]:
    """mmse, std (calibrated), std_raw (the samples' own), the kept samples, and mean_N: the mean of
    the first N = 1, 2, 4, ... samples. A deterministic method: mmse, and step_k, its state after step k
    of `states` (k < states; the last step is mmse)."""
    if not stochastic:
        return ["mmse"] + [f"step_{k}" for k in range(1, states)]
    names = ["mmse", "std", "std_raw"] + [f"sample_{i}" for i in range(min(sampling.keep_samples, sampling.samples))]
    if sampling.prefix_means:
        names += [f"mean_{n}" for n in (2**j for j in range(sampling.samples.bit_length())) if n < sampling.samples]
    return names


def prepare(checkpoint, image_path, output, settings: dict, normalization: Normalization | None = None,
            low: float | None = None, high: float | None = None) -> dict:
    """Create (or keep, when resuming) the partial store and return the plan description.

    `settings`: the config's `predict` section (schema defaults for what it omits; an unknown key
    raises an InputError). `low`/`high`: normalisation percentiles when `normalization` is None
    (default: the schema's `normalize` section).

    A method whose output grid is f times the input's (super-resolution) gets a store f times
    larger per axis with the pixel size divided by f; its tiles start on multiples of f, so each
    tile's input is a whole number of input pixels (see `run_shard`).
    """
    image = open_image(image_path)
    if normalization is None:
        norm = defaults("normalize")
        normalization = measure(image.data, norm["low"] if low is None else low,
                                norm["high"] if high is None else high, image_path)
    identity = describe_model(checkpoint)
    if identity.get("normalization"):  # a model that reads every image on one scale (photon counts), not percentiles
        normalization = Normalization(**identity["normalization"])
    stochastic = identity["stochastic"]
    checked = checked_settings(settings)
    sampling = SamplingConfig.from_settings(checked)
    ndim = image.data.ndim
    trained = identity.get("dims", identity["net"]["dims"])  # a 2D network may restore stacks plane by plane
    if trained != ndim:
        raise InputError(image_path, f"is {ndim}D but model {identity['name']} was trained on "
                         f"{trained}D images", "restore it with a model trained on the same kind of data")
    grid = tuple(identity.get("grid_factor") or (1,) * ndim)
    shape = tuple(n * f for n, f in zip(image.shape, grid))
    net_factor = 2 ** (len(identity["net"]["multipliers"]) - 1)
    factor = [math.lcm(net_factor, f) for f in grid]
    found = size_problem(checked["tile"], checked["overlap"], max(factor))
    if found is not None:  # refused before any store is made
        raise InputError(None, f"{found[0]} {found[1]} of model {identity['name']}", found[2])
    try:
        tile, overlap, block = sizes(checked, ndim, factor)
    except ValueError as error:
        problem, fix = error.args
        raise InputError(image_path, f"has {ndim} axes ({image.axes}) but {problem}", fix) from None
    border = per_axis_values(checked["border"], ndim)
    if len(border) != ndim:
        raise InputError(image_path, f"has {ndim} axes ({image.axes}) but predict.border gives {len(border)} values",
                         "give one value, or one per axis")
    # Chunks no larger than a block, so that blocks (and shards) write disjoint chunk files.
    chunks = tuple(min(c, b) for c, b in zip(default_chunks(shape), block))
    keep = min(sampling.keep_samples, sampling.samples) if stochastic else 0
    plan = {
        "checkpoint": _file_digest(checkpoint), "model": identity["name"], "method": identity["method"],
        "input": os.path.abspath(image_path), "input_shape": list(image.shape), "grid_factor": list(grid),
        "shape": list(shape), "axes": image.axes,
        "pixel_size": [p / f for p, f in zip(image.pixel_size, grid)], "normalization": asdict(normalization),
        "one_scale": bool(identity.get("normalization")),
        "tile": list(tile), "overlap": list(overlap), "border": list(border), "block": list(block),
        "chunks": list(chunks), "factor": factor,
        "sampling": _without_runtime(asdict(sampling)) | {"keep_samples": keep},
        "channels": channel_names(stochastic, sampling, _state_count(identity)),
    }
    work = partial_path(output)
    plan_file = work / PLAN_FILE
    if plan_file.exists() and json.loads(plan_file.read_text()) == plan:
        log.info("resuming the partial prediction in %s", work)
        return plan
    from ..models.checkpoint import load_model

    load_model(checkpoint)  # a checkpoint that cannot be restored fails here, before any store is made
    remove(work)
    create_ome_zarr(work, shape, np.float32, image.axes, tuple(plan["pixel_size"]), chunks, channels=plan["channels"],
                    fill_value=float("nan"), name=Path(output).name, units=image.units)
    (work / DONE_DIR).mkdir()
    write_text(plan_file, json.dumps(plan, indent=1))  # last: its presence means the store is complete
    return plan


def _state_count(identity: dict) -> int:
    """States a deterministic model's restoration keeps (its method's steps), from its identity alone."""
    from ..methods import method_class

    if identity["stochastic"]:
        return 1
    return method_class(identity["method"])(identity.get("options")).state_count()


def describe_model(checkpoint) -> dict:
    """The model's identity from the `model.json` that training writes beside its checkpoint."""
    sidecar = Path(checkpoint).with_name("model.json")
    if sidecar.exists():
        return json.loads(sidecar.read_text())
    from ..models.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)["identity"]


def checked_settings(settings: dict | None) -> dict:
    """The `predict` settings over the schema's defaults; an unknown key raises an InputError."""
    return config_settings("predict", settings)


def _without_runtime(sampling: dict) -> dict:
    """Batch and group change memory and speed, not the result: a store may resume with others."""
    return {k: v for k, v in sampling.items() if k not in ("batch", "group")}


def _tiling_plan(plan: dict):
    return make_plan(tuple(plan["shape"]), tuple(plan["tile"]), tuple(plan["overlap"]), tuple(plan["block"]),
                     tuple(plan["chunks"]), plan["factor"], border=tuple(plan["border"]))


def _on_output_grid(y: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """The input replicated f times per axis: a tile starting on a multiple of f holds whole input pixels,
    and a method recovers the input exactly by averaging each f-block (physics.AreaDownsample)."""
    for axis, f in enumerate(grid):
        if f > 1:
            y = np.repeat(y, f, axis=axis)
    return y


def run_shard(checkpoint, output, shard: int = 0, shards: int = 1, device: str = "auto",
              progress: bool | None = None, batch: int | None = None, group: int | None = None) -> dict:
    """Restore this shard's blocks that are not done yet; returns timing counters.

    `batch` (tiles per network call) and `group` (samples held at once) set speed and memory only;
    None takes SamplingConfig's defaults.
    """
    work = partial_path(output)
    plan_file = work / PLAN_FILE
    if not plan_file.exists():
        raise InputError(work, "has no prediction plan", "run the prepare step (rule predict_prepare) first")
    plan = json.loads(plan_file.read_text())
    import torch

    from ..models.checkpoint import load_model
    from .allocator import release_between_blocks, retain_freed_memory
    from .engine import Restorer
    from ..devices import resolve_device

    retain_freed_memory()  # the network's activations stay in the heap between evaluations (allocator.py)
    dev = resolve_device(device)
    method, net, _ = load_model(checkpoint, dev)
    runtime = {k: v for k, v in (("batch", batch), ("group", group)) if v is not None}
    restorer = Restorer(method, net, SamplingConfig(**plan["sampling"], **runtime), dev)
    image = open_image(plan["input"])
    norm = Normalization(**plan["normalization"])
    store = zarr.open_group(str(work), mode="r+")["0"]
    tiling = _tiling_plan(plan)
    mine = [b for b in tiling.blocks() if b.index % shards == shard and not (work / DONE_DIR / str(b.index)).exists()]
    stats = {"blocks": len(mine), "read_s": 0.0, "compute_s": 0.0, "write_s": 0.0}
    channels = plan["channels"]
    grid = tuple(plan.get("grid_factor") or (1,) * len(plan["shape"]))
    show_bar = progress if progress is not None else os.isatty(2)
    for done, block in enumerate(tqdm(mine, desc=f"{Path(output).name} shard {shard + 1}/{shards}",
                                      disable=not show_bar), 1):
        t0 = time.perf_counter()
        source = tuple(slice(s.start // f, s.stop // f) for s, f in zip(block.outer, grid))
        y = norm.apply(np.asarray(image.data[source].compute(), dtype=np.float32))
        y = torch.from_numpy(_on_output_grid(y, grid))
        t1 = time.perf_counter()
        result = restorer.restore(y, block, tiling)
        t2 = time.perf_counter()
        outputs = {"mmse": norm.invert(result.mean)}
        if result.var is not None:
            outputs["std_raw"] = result.var.sqrt() * norm.scale
        for i, s in enumerate(result.samples):
            outputs[f"sample_{i}"] = norm.invert(s)
        for n, m in result.prefix_means.items():
            outputs[f"mean_{n}"] = norm.invert(m)
        for k, state in enumerate(result.steps or [], 1):
            outputs[f"step_{k}"] = norm.invert(state)
        for name, value in outputs.items():
            store[(channels.index(name), *block.core)] = value.cpu().numpy()
        (work / DONE_DIR / str(block.index)).touch()
        if not show_bar:  # a log file or a pipe gets one line per block instead of a bar
            log.info("%s shard %d/%d: block %d of %d restored", Path(output).name, shard + 1, shards, done, len(mine))
        release_between_blocks()
        stats["read_s"] += t1 - t0
        stats["compute_s"] += t2 - t1
        stats["write_s"] += time.perf_counter() - t2
    stats["evaluations"] = restorer.evaluations
    return stats


def finalize(output, calibration=None) -> None:
    """Fill the `std` channel, add display windows and (for large images) a pyramid, and publish
    the partial store as `output` once every block is done.

    `std` is `std_raw` mapped through `calibration` (a `calibration.Calibration`, or the path of
    the JSON that rule calibrate writes); without one it is a copy of `std_raw`, and the metadata
    says so. Done block by block, so memory stays that of one block.
    """
    work = partial_path(output)
    plan = json.loads((work / PLAN_FILE).read_text())
    blocks = _tiling_plan(plan).blocks()
    done = len(os.listdir(work / DONE_DIR))
    if done != len(blocks):
        raise InputError(work, f"only {done} of {len(blocks)} blocks are restored", "rerun the predict shards")
    group = zarr.open_group(str(work), mode="r+")
    meta = {k: plan[k] for k in ("model", "method", "input", "normalization", "one_scale", "sampling", "tile", "overlap",
                                 "channels")}
    if "std" in plan["channels"]:
        meta["calibration"] = _calibrate_std(group["0"], plan, blocks, calibration)
    windows = channel_windows(group["0"], [block.core for block in blocks])
    finish_image(group, tuple(plan["pixel_size"]), plan["channels"], windows)
    group.attrs["flowrestore"] = meta
    remove(work / DONE_DIR)
    (work / PLAN_FILE).unlink()
    publish(work, output)


def _calibrate_std(store, plan: dict, blocks, calibration) -> dict:
    from ..analysis.calibration import Calibration, load

    if calibration is None:
        apply, meta = (lambda std: std), {"method": "none",
                                          "note": "uncalibrated: std is the samples' own std (std_raw)"}
    else:
        source = None if isinstance(calibration, Calibration) else str(calibration)
        calibration = calibration if source is None else load(source)
        if calibration.samples != plan["sampling"]["samples"]:
            raise InputError(source, f"was fitted on predictions with {calibration.samples} samples, this one has "
                             f"{plan['sampling']['samples']}", "rerun rule calibrate with the current predict.samples")
        apply, meta = calibration.apply, calibration.to_json() | {"source": source}
    low = np.float32(plan["normalization"]["low"])
    scale = np.float32(plan["normalization"]["high"] - plan["normalization"]["low"])
    std, raw, mmse = (plan["channels"].index(c) for c in ("std", "std_raw", "mmse"))
    reads_intensity = calibration is not None and calibration.needs_intensity
    for block in blocks:  # calibrations are defined in normalised units
        args = [store[(raw, *block.core)] / scale]
        if reads_intensity:
            args.append((store[(mmse, *block.core)] - low) / scale)
        store[(std, *block.core)] = apply(*args) * scale
    return meta


def predict(checkpoint, image_path, output, settings: dict | None = None, normalization: Normalization | None = None,
            device: str = "auto", progress: bool | None = None, calibration=None,
            low: float | None = None, high: float | None = None) -> dict:
    """All three steps in one process: the way to use this without Snakemake.

    `calibration`: as for `finalize`; `low`/`high`: percentiles of the input's normalisation (None: the schema's)
    when `normalization` is not given.
    """
    settings = settings or {}
    prepare(checkpoint, image_path, output, settings, normalization, low, high)
    stats = run_shard(checkpoint, output, 0, 1, device, progress, settings.get("batch"), settings.get("group"))
    finalize(output, calibration)
    return stats


def read_prediction(path) -> dict[str, np.ndarray]:
    """{channel name: array} of a prediction (loads it whole: for evaluation-sized images)."""
    group = zarr.open_group(str(path), mode="r")
    names = group.attrs["flowrestore"]["channels"]
    data = group["0"][...]
    return dict(zip(names, data))
