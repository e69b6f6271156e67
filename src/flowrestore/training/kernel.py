"""DDM4IP stages 1 and 2 on image files: learn an unknown blur kernel from unpaired degraded and clean sets.

Stage 1 trains v_ref, a flow of the degraded images; stage 2 (`methods.ddm4ip.KernelLearner`) a kernel
whose re-blurred clean images v_aux learns to match v_ref (Ryan et al., ICCV 2025; the authors' code
github.com/inria-thoth/ddm4ip). Both sets are read on one intensity scale (`ddm4ip.range`), so a PSF
of sum 1 keeps y = k * x exact. Every step draws its patches and noise from (seed, stage, step) alone,
and the state (networks, kernel, both optimizers, step) is saved every `checkpoint_every` steps to
`work/last.pt`, so an interrupted run resumes where it stopped and ends as an uninterrupted one would.

Writes into `out_dir`: `kernel.tif` (float32, sum 1, centre at size // 2), `kernel.png` (beside the
true kernel when given), `metrics.tsv` (stage, step, loss; kernel error when the true kernel is known).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_output, write_text
from ..config import settings
from ..errors import InputError
from ..methods import ddm4ip as D
from ..models.checkpoint import load_checkpoint, save_checkpoint
from ..models.nets import NetConfig, UNet

log = logging.getLogger(__name__)


def read_set(paths, value_range, role: str) -> list[np.ndarray]:
    """2D images of `paths` as float32 on the scale `value_range` = [raw low, raw high] -> [0, 1]."""
    from ..data.io import open_image

    low, high = map(float, value_range)
    out = []
    for path in paths:
        data = np.asarray(open_image(path).data, dtype=np.float32)
        if data.ndim != 2:
            raise InputError(path, f"is a {data.ndim}D image; kernel learning reads 2D {role} images",
                             "give single-plane images (or their central planes)")
        out.append((data - low) / (high - low))
    if not out:
        raise InputError(None, f"no {role} images to learn the kernel from", f"give at least one {role} image")
    return out


def patches(images: list[np.ndarray], batch: int, patch: int, rng: np.random.Generator) -> torch.Tensor:
    """(batch, 1, patch, patch) random crops of random images."""
    crops = []
    for i in rng.integers(0, len(images), batch):
        img = images[i]
        if min(img.shape) < patch:
            raise InputError(None, f"an image of {img.shape[0]}x{img.shape[1]} is smaller than ddm4ip.patch_size {patch}",
                             "lower ddm4ip.patch_size")
        y, x = rng.integers(0, img.shape[0] - patch + 1), rng.integers(0, img.shape[1] - patch + 1)
        crops.append(img[y:y + patch, x:x + patch])
    return torch.from_numpy(np.stack(crops)[:, None].copy())


def _rng(seed: int, stage: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, stage, step])


def learn_kernel(degraded_paths, clean_paths, out_dir, config: dict | None = None, true_kernel=None) -> Path:
    """Run (or resume) stages 1 and 2; returns the path of the written `kernel.tif`.

    config: the `ddm4ip` settings (schema defaults for what it omits). true_kernel: a (size, size) array
    (a demo's known PSF) to score the kernel against (`methods.ddm4ip.kernel_error`) and plot beside it.
    """
    cfg = settings("$defs.ddm4ip", config)
    out = Path(out_dir)
    degraded = read_set(degraded_paths, cfg["range"], "degraded")
    clean = read_set(clean_paths, cfg["range"], "clean")
    scale = float(cfg["range"][1]) - float(cfg["range"][0])
    read = cfg["read_noise"] / scale
    if cfg["noise"] == "poisson":  # variance read^2 + gain * signal, in units of the range
        sigma, gain = read, cfg["gain"] / scale
    else:
        mean = float(np.mean([d.mean() for d in degraded]))
        sigma, gain = float(np.sqrt(max(mean, 0.0) * cfg["gain"] / scale + read**2)), 0.0
    k_true = None if true_kernel is None else torch.as_tensor(np.asarray(true_kernel, np.float64))
    torch.manual_seed(cfg["seed"])
    net_config = NetConfig(dims=2, in_channels=1, out_channels=1, channels=cfg["channels"], norm="group")
    v_ref = UNet(net_config)
    opt_ref = torch.optim.Adam(v_ref.parameters(), lr=cfg["lr"], betas=D.BETAS)
    kernel = D.make_kernel_model(cfg["kernel"], cfg["size"], cfg["init_sigma"])
    identity = {"config": cfg, "degraded": [os.fspath(p) for p in degraded_paths],
                "clean": [os.fspath(p) for p in clean_paths]}
    stage, step, rows, learner = 1, 0, [], None
    resume = out / "work" / "last.pt"
    if resume.exists():
        state = load_checkpoint(resume, keys=("identity", "v_ref"))
        if state["identity"] == identity:
            stage, step, rows = state["stage"], state["step"], state["rows"]
            v_ref.load_state_dict(state["v_ref"])
            if stage == 1:
                opt_ref.load_state_dict(state["opt_ref"])
            log.info("resuming kernel learning at stage %d, step %d", stage, step)
        else:
            log.info("settings or data changed since %s was written: starting afresh", resume)

    def save(payload: dict) -> None:
        save_checkpoint(resume, {"identity": identity, "stage": stage, "step": step, "rows": rows,
                                 "v_ref": v_ref.state_dict(), **payload})

    if stage == 1:
        v_ref.train()
        while step < cfg["stage1_steps"]:
            x1 = patches(degraded, cfg["batch_size"], cfg["patch_size"], _rng(cfg["seed"], 1, step))
            loss = D.flow_step(v_ref, opt_ref, x1, D.step_generator(cfg["seed"], step))
            step += 1
            if step % 100 == 0 or step == cfg["stage1_steps"]:
                rows.append({"stage": 1, "step": step, "loss": loss, "kernel_error": None})
                log.info("stage 1 step %d loss %.5f", step, loss)
            if step % cfg["checkpoint_every"] == 0:
                save({"opt_ref": opt_ref.state_dict()})
        stage, step = 2, 0
        save({})
    learner = D.KernelLearner(v_ref, kernel, sigma, cfg["weights"], cfg["lr_kernel"], cfg["lr_aux"], cfg["seed"], gain)
    if resume.exists():
        state = load_checkpoint(resume, keys=("identity", "v_ref"))
        if state.get("learner") is not None:
            learner.load_state_dict(state["learner"])
    while learner.steps < cfg["stage2_steps"]:
        s = learner.steps
        rng = _rng(cfg["seed"], 2, s)
        parts = learner.step(patches(clean, cfg["batch_size"], cfg["patch_size"], rng),
                             patches(clean, cfg["batch_size"], cfg["patch_size"], rng))
        step = learner.steps
        if step % 100 == 0 or step == cfg["stage2_steps"]:
            k = learner.kernel.kernel().detach().double()
            err = None if k_true is None else D.kernel_error(k, k_true)
            rows.append({"stage": 2, "step": step, "loss": parts["aux"], "kernel_error": err})
            log.info("stage 2 step %d aux loss %.5f%s", step, parts["aux"], "" if err is None else f" kernel error {err:.3f}")
        if step % cfg["checkpoint_every"] == 0:
            save({"learner": learner.state_dict()})
    learned = learner.kernel.kernel().detach().double().numpy()
    _write_outputs(out, learned, None if k_true is None else k_true.numpy(), rows)
    return out / "kernel.tif"


def _write_outputs(out: Path, kernel: np.ndarray, true_kernel, rows: list[dict]) -> None:
    import pandas as pd
    import tifffile

    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / "kernel.tif") as tmp:
        tifffile.imwrite(tmp, (kernel / kernel.sum()).astype(np.float32), metadata={"axes": "YX"})
    lines = pd.DataFrame(rows, columns=["stage", "step", "loss", "kernel_error"]).to_csv(sep="\t", index=False,
                                                                                        na_rep="", float_format="%.6g")
    write_text(out / "metrics.tsv", lines)
    _plot(out / "kernel.png", kernel, true_kernel)


def _plot(path: Path, kernel: np.ndarray, true_kernel) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [("learned kernel", kernel)] + ([] if true_kernel is None else [("true kernel", true_kernel)])
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.2), squeeze=False)
    vmax = max(float(k.max()) for _, k in shown)
    for ax, (title, k) in zip(axes[0], shown):
        ax.imshow(k, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(title)
        ax.set_xticks([]), ax.set_yticks([])
    if true_kernel is not None:
        fig.suptitle(f"kernel error {D.kernel_error(torch.as_tensor(kernel), torch.as_tensor(true_kernel)):.3f} "
                     "(L1, after centre-of-mass alignment)", fontsize=9)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
