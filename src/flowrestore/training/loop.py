"""Fit a restoration model: AdamW with warm-up and cosine decay, EMA weights, resumable.

The resumable state lives in `work/last.pt` beside the final `checkpoint.pt`: Snakemake deletes
the declared outputs of an interrupted job, so the state it resumes from must not be one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import atomic_output, write_text
from ..config import defaults, settings
from ..models.checkpoint import load_checkpoint, save_checkpoint
from ..errors import InputError
from ..methods import get_method
from ..models.nets import NetConfig, UNet, count_parameters
from ..data.patches import Acquisition, PatchBatches
from ..devices import resolve_device

log = logging.getLogger(__name__)

TRAIN_DEFAULTS = defaults("train")  # the schema's, the one place defaults are set
RUNTIME = ("workers", "device", "compile", "val_every", "checkpoint_every", "val_batches")  # cannot change the weights
_clock = time.perf_counter  # the budget's clock (a test gives its own)


class TrainingDiverged(InputError):
    """The loss stopped being finite: a setting to change, reported in one line like bad input."""


def lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def budget_steps(minutes: float, done: int, elapsed: float, probed: int, cap: int) -> int:
    """Total steps that fit `minutes` of training, from `probed` steps that took `elapsed` seconds.

    `done` steps are behind us (the probe's end); the rest of the budget is spent at the probe's
    seconds per step. At least `done`, at most `cap` (train.steps).
    """
    per_step = elapsed / probed
    remaining = max(0.0, 60.0 * minutes - elapsed)
    return int(min(cap, max(done, done + math.floor(remaining / per_step))))


def data_fingerprint(acquisitions: list[Acquisition]) -> str:
    """Names and normalisation of the data a model saw; a change means resuming would be wrong."""
    text = json.dumps([(a.name, a.input_norm.low, a.input_norm.high, a.target_norm.low, a.target_norm.high)
                       for a in acquisitions])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class TrainState:
    net: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step: int
    metrics: list[dict]
    total: int  # steps of the run: train.steps, or what train.minutes allows once the probe has run
    budgeted: bool = False  # train.minutes has been turned into `total`


def _patch_shape(patch_size, dims: int) -> tuple[int, ...]:
    return tuple(patch_size) if isinstance(patch_size, (list, tuple)) else (patch_size,) * dims


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, net: torch.nn.Module, decay: float, step: int) -> None:
    # Short warm-up of the decay so early EMA weights are not dominated by the random init.
    d = min(decay, (1 + step) / (10 + step))
    for pe, p in zip(ema.parameters(), net.parameters()):
        pe.lerp_(p.detach(), 1 - d)
    for be, b in zip(ema.buffers(), net.buffers()):
        be.copy_(b)


def _step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(hashlib.sha256(f"{seed}:{step}".encode()).hexdigest()[:15], 16))
    return g


@torch.no_grad()
def validation_loss(method, net, batches: PatchBatches, n: int, device, seed: int) -> float:
    """Loss on fixed validation patches with fixed noise: comparable from one evaluation to the next."""
    net.eval()
    losses = []
    for i in range(n):
        y, x1 = (b.to(device) for b in batches[i])
        losses.append(float(method.loss(net, x1, y, generator=_step_generator(seed, -1 - i, device))))
    net.train()
    return float(np.mean(losses))


def train_model(name: str, method_name: str, net_config: dict, train_config: dict,
                train_acquisitions: list[Acquisition], val_acquisitions: list[Acquisition],
                output_dir: str | os.PathLike, progress: bool | None = None, method_options: dict | None = None) -> Path:
    """Train (or resume) and write `checkpoint.pt`, `metrics.tsv` and `loss.png` to output_dir.

    `net_config`, `train_config` and `method_options` are the config's `models.<name>.net`,
    `train` and `models.<name>.options`: missing keys take the schema's defaults, unknown keys
    raise an InputError naming them.
    """
    cfg = settings("train", train_config)
    out = Path(output_dir)
    work = out / "work"  # created by the first checkpoint: a refused start leaves nothing behind
    device = resolve_device(cfg["device"])
    method = get_method(method_name, method_options).to(device)
    if method.data not in ("paired", "targets"):
        raise InputError(None, f"method {method_name} trains on {method.data} data, which this training loop does not "
                         "read yet", "choose a method that trains on input/target pairs or on targets alone")
    targets_only = method.data == "targets"
    bare = [a.name for a in train_acquisitions + val_acquisitions if a.input_path is None]
    if bare and not targets_only:
        raise InputError(None, f"method {method_name} trains on input/target pairs but {len(bare)} acquisitions have no "
                         f"input (e.g. {bare[0]})", "give them inputs, or use a method that learns from references "
                         "alone (relative_flow)")
    fixed = method.normalization()
    if fixed is not None:  # one intensity scale for every image instead of each one's percentiles
        train_acquisitions, val_acquisitions = ([replace(a, input_norm=fixed, target_norm=fixed) for a in acqs]
                                                for acqs in (train_acquisitions, val_acquisitions))
    dims = len(open_shape(train_acquisitions[0], targets_only))
    net_settings = settings("$defs.net", net_config)
    if net_settings["norm"] == "auto":
        net_settings["norm"] = method.net_norm
    netcfg = NetConfig(**{**net_settings, "dims": method.net_dims(dims), "in_channels": method.in_channels(1),
                          "time": method.time_input})
    patch = method.patch_shape(_patch_shape(cfg["patch_size"], dims))
    if any(p % netcfg.factor for p in patch if p > 1):
        raise InputError(None, f"train.patch_size {patch} is not a multiple of {netcfg.factor}",
                         f"use a multiple of {netcfg.factor} (the network downsamples {len(netcfg.multipliers) - 1} times)")
    torch.manual_seed(cfg["seed"])
    net = UNet(netcfg).to(device)
    ema = copy.deepcopy(net).requires_grad_(False)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    fingerprint = data_fingerprint(train_acquisitions)
    identity = {"name": name, **method.identity(), "grid_factor": list(method.grid_factor(dims)),
                "dims": dims, "net": netcfg.to_dict(), "train": {k: v for k, v in cfg.items() if k not in RUNTIME},
                "data": fingerprint}
    state = TrainState(net, ema, optimizer, None, 0, [], cfg["steps"], cfg["minutes"] is None)
    # The schedule reads state.total, which train.minutes fixes after the probe (warm-up covers the probe
    # at the defaults, so the probe's learning rates do not depend on the total it decides).
    scheduler = state.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg["warmup"], state.total))
    resume = work / "last.pt"
    if resume.exists():
        ckpt = load_checkpoint(resume)
        if ckpt["identity"] == identity:
            net.load_state_dict(ckpt["weights"])
            method.load_state_dict(ckpt.get("method_state", {}))
            ema.load_state_dict(ckpt["ema"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            state.step, state.metrics = ckpt["step"], ckpt["metrics"]
            state.total, state.budgeted = ckpt.get("total", cfg["steps"]), ckpt.get("budgeted", state.budgeted)
            log.info("resuming %s from step %d", name, state.step)
        else:
            log.info("config or data changed since %s was written: starting afresh", resume)

    log.info("%s: %s, %d parameters, patches %s, batch %d, %s on %s", name, method_name,
             count_parameters(net), patch, cfg["batch_size"], f"{state.total} steps" if state.budgeted
             else f"{cfg['minutes']} minutes (at most {cfg['steps']} steps)", device)
    batches = PatchBatches(train_acquisitions, patch, cfg["batch_size"], seed=cfg["seed"], foreground=cfg["foreground"],
                           targets_only=targets_only)
    val_batches = PatchBatches(val_acquisitions or train_acquisitions, patch, cfg["batch_size"], seed=cfg["seed"] + 1,
                               foreground=cfg["foreground"], augment=False, targets_only=targets_only)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(state.step, cfg["steps"]),
                                         num_workers=cfg["workers"], pin_memory=device.type == "cuda",
                                         persistent_workers=False, prefetch_factor=4 if cfg["workers"] else None)
    model = torch.compile(net) if cfg["compile"] else net
    amp = cfg["amp"] and device.type == "cuda"

    saved = state.step  # step of the last good checkpoint; 0: none yet

    def save(path: Path, final: bool = False) -> None:
        save_checkpoint(path, {
            "identity": identity, "step": state.step, "metrics": state.metrics,
            "total": state.total, "budgeted": state.budgeted,
            "weights": net.state_dict(), "ema": ema.state_dict(), "method_state": method.state_dict(),
            **({} if final else {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}),
        })

    step_fn = make_step(method, model, net, optimizer, scheduler, cfg["grad_clip"], amp)
    running, t_last = [], time.perf_counter()
    probe_start, probe_clock = state.step, _clock()
    bar = tqdm(total=state.total, initial=state.step, desc=name, disable=not (progress if progress is not None
                                                                              else os.isatty(2)))
    net.train()
    for y, x1 in loader:
        if state.step >= state.total:  # train.minutes ended the run before train.steps
            break
        y, x1 = y.to(device, non_blocking=True), x1.to(device, non_blocking=True)
        method.schedule(state.step, state.total)
        loss = step_fn(y, x1, _step_generator(cfg["seed"], state.step, device))
        if loss is None:
            kept = f"this file keeps the last good state (step {saved})" if saved else "no checkpoint was written yet"
            raise TrainingDiverged(resume if saved else out, f"training of {name} diverged at step {state.step} "
                                   f"(loss is not finite); {kept}",
                                   f"lower train.lr (now {cfg['lr']}) or train.grad_clip, then rerun")
        state.step += 1
        _update_ema(ema, net, cfg["ema"], state.step)
        running.append(loss)
        bar.update(1)
        if not state.budgeted and state.step - probe_start == cfg["probe_steps"]:
            state.total = budget_steps(cfg["minutes"], state.step, _clock() - probe_clock, cfg["probe_steps"], cfg["steps"])
            state.budgeted = True
            bar.total = state.total
            log.info("%s: %g minutes allow %d steps", name, cfg["minutes"], state.total)
        last = state.step == state.total
        if state.step % cfg["val_every"] == 0 or last:
            method.schedule(state.total, state.total)  # validation at the final curriculum: comparable over steps
            row = {"step": state.step, "loss": float(np.mean(running)), "lr": scheduler.get_last_lr()[0],
                   "val_loss": validation_loss(method, ema, val_batches, cfg["val_batches"], device, cfg["seed"]),
                   "seconds": time.perf_counter() - t_last}
            state.metrics.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", val=f"{row['val_loss']:.4f}")
            log.info("step %d loss %.5f val %.5f (%.1f s)", row["step"], row["loss"], row["val_loss"], row["seconds"])
            running, t_last = [], time.perf_counter()
        if state.step % cfg["checkpoint_every"] == 0 or last:
            save(resume)
            saved = state.step
    bar.close()
    save(out / "checkpoint.pt", final=True)
    # What the model is, readable without torch (prediction planning reads it on the head node).
    write_text(out / "model.json", json.dumps(identity | {"step": state.step}, indent=1))
    write_metrics(state.metrics, out / "metrics.tsv")
    from ..analysis.plots import loss_curve

    loss_curve(state.metrics, out / "loss.png", title=f"{name} ({method_name})")
    return out / "checkpoint.pt"


def make_step(method, model, net, optimizer, scheduler, grad_clip: float, amp: bool):
    """One optimisation step on a batch; returns the loss, or None (and changes nothing) if it is not finite."""
    device_type = next(net.parameters()).device.type

    def step(y: torch.Tensor, x1: torch.Tensor, generator: torch.Generator | None) -> float | None:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            loss = method.loss(model, x1, y, generator=generator)
        value = loss.item()
        if not math.isfinite(value):
            return None
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        return value

    return step


def open_shape(acq: Acquisition, targets_only: bool = False) -> tuple[int, ...]:
    import zarr

    return zarr.open_group(acq.target_path if targets_only else acq.input_path, mode="r")["0"].shape


def write_metrics(rows: list[dict], path: Path) -> None:
    import pandas as pd

    with atomic_output(path) as tmp:
        pd.DataFrame(rows, columns=["step", "loss", "lr", "val_loss", "seconds"]).to_csv(tmp, sep="\t", index=False)
