"""Which uncertainty calibration to trust: UCE and interval coverage on held-out acquisitions.

For K = 4, 8, 16, 32 posterior samples and every method in `flowrestore.analysis.calibration.METHODS`,
fits on the demo's val acquisitions and judges on its test acquisitions (never the fit data),
and prints one table, measured in one run:
  UCE before and after calibration (20 quantile bins of predicted std; 0 is perfect),
  coverage of the central 68% and 95% Gaussian intervals of the calibrated std (targets 68%, 95%),
  coverage of the central 68% and 95% intervals of the samples' empirical quantiles (no calibration).
The issue's targets: UCE <= 0.05 and 95% coverage in [93%, 97%] on test.

The K samples come from one prediction of each val/test acquisition with 32 samples, all kept;
the first K of them are the K-sample prediction (the starting noise is keyed by sample index, so
they are exactly what a K-sample run draws). Needs the demo's trained model (`snakemake --cores 2`).

    python bench/calibration.py [--results results] [--model hazematching] [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import scratch  # noqa: E402

KS = (4, 8, 16, 32)


def predictions(results: Path, model: str, cache: Path, device: str) -> dict[str, list]:
    """{split: [(TestPair, prediction path)]} for val and test, predicted with max(KS) samples, all kept."""
    import torch

    from flowrestore.analysis.evaluate import pairs_of_split
    from flowrestore.inference.predict import predict

    from common import threads

    torch.set_num_threads(threads())
    ckpt = results / "models" / model / "checkpoint.pt"
    settings = {"samples": max(KS), "keep_samples": max(KS), "prefix_means": False}
    out = {}
    for split in ("val", "test"):
        out[split] = []
        for pair in pairs_of_split(results / "pairs.tsv", results / "convert", split):
            path = cache / model / f"{pair.acquisition}.ome.zarr"
            if not path.exists():
                stats = predict(ckpt, pair.input_path, path, settings, device=device, progress=False)
                print(f"  predicted {split} {pair.acquisition}: {stats['compute_s']:.0f} s", flush=True)
            out[split].append((pair, path))
    return out


def pixels(split: str, items: list, k: int):
    """The calibration's `Pixels` of one split when only the first k samples exist."""
    from flowrestore.analysis.calibration import Pixels, sample_statistics

    from flowrestore.analysis.evaluate import load_image, normalised, prediction_info, prediction_norm, read_channels

    stds, errors, means, inside = [], [], [], {}
    for pair, path in items:
        info = prediction_info(path)
        names = [f"sample_{i}" for i in range(k)]
        channels = read_channels(path, names)
        low, high = prediction_norm(info, pair)
        samples = normalised(np.stack([channels[n] for n in names]), low, high)
        target = normalised(load_image(pair.target_path), *pair.target_norm)
        mmse, std, covered = sample_statistics(samples, target)
        stds.append(std.ravel())
        errors.append((mmse - target).ravel())
        means.append(mmse.ravel())
        for level, hit in covered.items():
            inside.setdefault(level, []).append(hit.ravel())
    return Pixels(split, tuple(p.acquisition for p, _ in items), np.concatenate(stds), np.concatenate(errors),
                  samples=k, inside={level: np.concatenate(v) for level, v in inside.items()},
                  intensity=np.concatenate(means))


def main() -> None:
    from flowrestore.analysis.calibration import METHODS, fit, judge

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--model", default="hazematching")
    p.add_argument("--cache", type=Path, default=None, help="keep the 32-sample predictions here (reused if present)")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    cache = args.cache or scratch("flowrestore-calibration-")
    os.makedirs(cache, exist_ok=True)
    items = predictions(args.results, args.model, cache, args.device)
    print(f"model {args.model}: fit on {len(items['val'])} val, judged on {len(items['test'])} test acquisitions")
    header = (f"{'K':>3} {'method':<18} {'UCE before':>10} {'UCE after':>9} {'cov68 gauss':>11} {'cov95 gauss':>11} "
              f"{'cov68 samples':>13} {'cov95 samples':>13}")
    print(header)
    print("-" * len(header))
    for k in KS:
        val, test = pixels("val", items["val"], k), pixels("test", items["test"], k)
        for method in METHODS:
            calibration, _ = fit(val, method)
            verdict = judge(calibration, test)
            gauss = verdict.coverage_after
            print(f"{k:>3} {method:<18} {verdict.uce_before:>10.3f} {verdict.uce_after:>9.3f} "
                  f"{gauss[0.68]:>11.1%} {gauss[0.95]:>11.1%} "
                  f"{test.inside[0.68].mean():>13.1%} {test.inside[0.95].mean():>13.1%}", flush=True)


if __name__ == "__main__":
    main()
