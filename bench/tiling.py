"""Does the restored image depend on `predict.tile`? And is the std map's border ring inflated?

Trains a small regression model and a small guided_cfm model on simulated demo data (CPU, a few
hundred steps, through the package's train_model), once per network variant (`--nets`: the
`$defs.net` settings norm and padding, when the package has them), then predicts one 250 x 250 test image with
tile 64, tile 128 and one whole tile (fixed seeds; keyed noise makes the starting noise of a
pixel the same in every tile) and prints, in one run:
  - mean and max |difference| between those predictions, in % of the whole-tile output's range
    (max - min), for the regression output and the guided MMSE;
  - the std ring ratio: mean std on the outermost pixel ring / mean std of the interior (pixels at
    least 16 from the border), per tile setting; beside it the same ratio of the MMSE's real error
    |MMSE - target|, which is what a calibrated std should follow;
  - training quality at equal steps: final validation loss and the test PSNR (whole tile) of
    each model, so a change of architecture is judged on what it costs.

    python bench/tiling.py                      # the package's default network
    python bench/tiling.py --nets group:zeros channel:zeros channel:reflect none:reflect
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import scratch, simulated_acquisitions  # noqa: E402
from flowrestore.analysis.metrics import psnr, psnr_affine  # noqa: E402
from flowrestore.inference.predict import predict, read_prediction  # noqa: E402
from flowrestore.training.loop import train_model  # noqa: E402

TILES = {"64": 64, "128": 128, "whole": 256}  # 256: the 250-pixel image in one tile (rounded up to the factor)


def ring_ratio(a: np.ndarray, margin: int = 16) -> float:
    """Mean over the outermost pixel ring / mean over the interior (at least `margin` from the border)."""
    return border_profile(a, 1, margin)[0]


def differences(a: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    span = float(ref.max() - ref.min())
    d = np.abs(a - ref) / span * 100
    return float(d.mean()), float(d.max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="*", default=[None], help="norm:padding of each network to compare (default: the schema's)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--nfe", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = scratch("flowrestore-tiling-")
    data = simulated_acquisitions(6, (256, 256), root / "data")
    train, val = data[:4], data[4:5]
    test = simulated_acquisitions(1, (250, 250), root / "test")[0]
    target = np.asarray(read_prediction_like(test.target_path), np.float32)
    fast = {"steps": args.steps, "batch_size": 8, "patch_size": 64, "val_every": args.steps, "checkpoint_every": args.steps,
            "val_batches": 8, "warmup": 20}
    for variant in args.nets:
        net = {} if variant is None else dict(zip(("norm", "padding"), variant.split(":")))
        label = variant or "default"
        for method in ("regression", "guided_cfm"):
            t0 = time.perf_counter()
            out = root / f"{label}-{method}"
            ckpt = train_model(method, method, net, fast, train, val, out)
            val_loss = _final_val_loss(out)
            train_s = time.perf_counter() - t0
            preds = {}
            for name, tile in TILES.items():
                settings = {"tile": tile, "samples": args.samples, "nfe": args.nfe, "seed": 3, "keep_samples": 0,
                            "prefix_means": False}
                path = out / f"tile{name}.ome.zarr"
                predict(ckpt, test.input_path, path, settings, normalization=test.input_norm, device="cpu")
                preds[name] = read_prediction(path)
            whole = preds["whole"]["mmse"]
            err = np.abs(whole - target)
            line = [f"{label:>14} {method:<10} val loss {val_loss:.5f}  test PSNR {psnr(whole, target):5.2f} dB, "
                    f"affine {psnr_affine(whole, target):5.2f} dB  (train {train_s:.0f} s)"]
            for a, b in (("64", "whole"), ("128", "whole"), ("64", "128")):
                mean, top = differences(preds[a]["mmse"], preds[b]["mmse"])
                line.append(f"    |{a} - {b}|: mean {mean:.3f}% max {top:.2f}% of the range")
            if "std" in preds["whole"]:
                rings = "  ".join(f"tile {n} {ring_ratio(preds[n]['std']):.2f}" for n in TILES)
                line.append(f"    std ring ratio: {rings};  error ring ratio {ring_ratio(err):.2f}")
                line.append("    std / interior at border distance 0..5 (whole tile): "
                            + " ".join(f"{v:.2f}" for v in border_profile(preds["whole"]["std"])))
            else:
                line.append(f"    error ring ratio {ring_ratio(err):.2f}")
            print("\n".join(line), flush=True)


def border_profile(a: np.ndarray, depth: int = 6, margin: int = 16) -> list[float]:
    """Mean of each pixel ring at distance 0, 1, ... from the border, over the interior mean."""
    d = border_distance(a.shape)
    return [float(a[d == k].mean() / a[d >= margin].mean()) for k in range(depth)]


def border_distance(shape: tuple[int, int]) -> np.ndarray:
    i, j = np.ogrid[:shape[0], :shape[1]]
    return np.minimum(np.minimum(i, shape[0] - 1 - i), np.minimum(j, shape[1] - 1 - j))


def read_prediction_like(path) -> np.ndarray:
    import zarr

    return zarr.open_group(str(path), mode="r")["0"][...]


def _final_val_loss(out: Path) -> float:
    rows = (out / "metrics.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    return float(rows[-1].split("\t")[header.index("val_loss")])


if __name__ == "__main__":
    main()
