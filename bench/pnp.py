"""Known-operator demos (EM Generalist / PnP-Flow): the flow prior's MMSE against the classical baselines.

For each demo config (config/sr.yaml, config/deblur.yaml, config/isotropic.yaml, config/unknown_blur.yaml) this runs the workflow (Snakemake resumes
what is done), then prints, measured in one run, per test acquisition set:
  PSNR (dB, mean +- std over the test images) of the MMSE, a posterior sample and each classical
  baseline (bicubic on an area-aligned grid for SR; Wiener and Richardson-Lucy with the true PSF for
  deblurring; linear and cubic axial interpolation for isotropic 3D, with the axial FRC resolution), the paired MMSE gain over the best baseline, and
  the data residual ||A x_hat - y|| / sqrt(n) of the MMSE over the simulated noise std
  sqrt(A x + read_noise^2) (photo-electrons, from the noise-free target).
The issue's targets: SR x4 MMSE >= bicubic + 1.0 dB; deblurring >= Wiener + 0.5 dB; axial x4 >= cubic
+ 1.0 dB with a finer axial FRC resolution than linear interpolation. unknown_blur (DDM4IP): the learned
kernel's error after alignment (target <= 0.15), Wiener with the learned kernel against Wiener with the
true PSF (target: within 0.5 dB) and the flow prior with the learned kernel against the same prior with
the true PSF (target: within 0.7 dB).

    python bench/pnp.py [--demos sr deblur isotropic unknown_blur] [--no-run]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"sr": ("input (bicubic x4)", 1.0), "deblur": ("Wiener (true PSF)", 0.5),
           "isotropic": ("input (cubic axial x4)", 1.0), "unknown_blur": ("Wiener (true PSF)", None)}
AXIAL = "frc_axial_1/7_um"


def residuals(results: Path, model: str, read_noise: float = 2.0) -> list[float]:
    """Per test image: RMS of A(mmse) - y over the expected noise std (1: the data fitted to the noise level)."""
    from flowrestore.analysis.evaluate import load_image, pairs_of_split
    from flowrestore.inference.predict import read_prediction
    from flowrestore.physics.tasks import task_operator

    options = json.loads((results / "models" / model / "model.json").read_text())["options"]
    out = []
    for pair in pairs_of_split(results / "pairs.tsv", results / "convert"):
        y = torch.from_numpy(load_image(pair.input_path).astype(np.float64))
        op = task_operator(options, y.ndim).double()
        clean = torch.from_numpy(load_image(pair.target_path).astype(np.float64))[None, None]
        mmse = torch.from_numpy(read_prediction(results / "predict" / model / f"{pair.acquisition}.ome.zarr")["mmse"]
                                .astype(np.float64))[None, None]
        with torch.no_grad():
            rms = float((op.A(mmse)[0, 0] - y).pow(2).mean().sqrt())
            noise = float((op.A(clean)[0, 0] + read_noise**2).mean().sqrt())
        out.append(rms / noise)
    return out


def report(demo: str, config: Path) -> None:
    cfg = yaml.safe_load(config.read_text())
    results = ROOT / cfg["results"]
    table = pd.read_csv(results / "evaluate" / "metrics.tsv", sep="\t")
    model = next(iter(cfg["models"]))
    print(f"\n== {demo} ({config.name}): {table['acquisition'].nunique()} test images")
    for label, group in table.groupby("label", sort=False):
        axial = f", axial FRC {group[AXIAL].mean():.3f} um" if AXIAL in group else ""
        print(f"  {label:40s} PSNR {group['psnr'].mean():6.2f} +- {group['psnr'].std(ddof=0):.2f} dB{axial}")
    baseline, target = TARGETS[demo]
    by = table.pivot_table(index="acquisition", columns="label", values="psnr")
    gain = by[f"{model} MMSE"] - by[baseline]
    print(f"  MMSE - {baseline}: {gain.mean():+.2f} +- {gain.std(ddof=0):.2f} dB"
          + (f" (target {target:+.1f} dB)" if target is not None else "")
          + f", better on {int((gain > 0).sum())} of {len(gain)}")
    if demo == "unknown_blur":
        kernel = pd.read_csv(results / "kernel" / "metrics.tsv", sep="\t")["kernel_error"].dropna()
        print(f"  learned kernel error (L1 after centre-of-mass alignment): {kernel.iloc[-1]:.3f} (target <= 0.15)")
        for a, b, goal in (("Wiener (learned kernel)", "Wiener (true PSF)", 0.5),
                           (f"{model} MMSE", f"{list(cfg['models'])[1]} MMSE", 0.7)):
            d = by[a] - by[b]
            print(f"  {a} - {b}: {d.mean():+.2f} +- {d.std(ddof=0):.2f} dB (target: within {goal} dB, i.e. >= -{goal})")
    if AXIAL in table:
        res = table.groupby("label")[AXIAL].mean()
        mine, linear = res[f"{model} MMSE"], res["input (linear axial x4)"]
        print(f"  axial FRC 1/7 of the MMSE {mine:.3f} um vs linear interpolation {linear:.3f} um: "
              f"{'finer' if mine < linear else 'not finer'} (target: finer)")
    r = residuals(results, model)
    print(f"  data residual of the MMSE / noise std: {np.mean(r):.2f} (min {min(r):.2f}, max {max(r):.2f}; "
          "target <= 1.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demos", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--no-run", action="store_true", help="only read the results already there")
    args = parser.parse_args()
    for demo in args.demos:
        config = ROOT / "config" / f"{demo}.yaml"
        if not args.no_run:
            subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(config), "-q"],
                           cwd=ROOT, check=True)
        report(demo, config)


if __name__ == "__main__":
    main()
