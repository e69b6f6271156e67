"""Is the guided model's posterior worth sampling? MMSE against the regression at equal training time.

Trains, on each simulated data set, the regression (`care`) and guided CFM variants for the same
`train.minutes` (one after another on this machine), predicts the val and test acquisitions with
K posterior samples, and prints in one run, per data set and model:
  - test PSNR (affine, CARE-style) and SSIM of the MMSE (or the point prediction), and the MMSE's
    difference to the regression's, mean over images and the number of images where it is >= 0;
  - single-sample sharpness: high-frequency power (radial frequency > 0.25 cycles/pixel, half
    Nyquist) of the first posterior sample over the target's (1 is realistic, < 1 blurred);
  - calibration (each --calibrations method, fitted on val, judged on test): UCE before and
    after, coverage of the calibrated 68% and 95% Gaussian intervals, and the per-acquisition UCE.
Data sets: `demo` (the 2-D simulator of the demo) and `specimen` (the central plane of a
simulated 3-D specimen: the haze is the out-of-focus light of the planes above and below).

    python bench/posterior.py                       # 2 minutes per model, 8 train / 2 val / 5 test
    python bench/posterior.py --minutes 5 --variants velocity data --datasets specimen
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import scratch, threads  # noqa: E402
from flowrestore.analysis.calibration import Pixels, fit, judge  # noqa: E402
from flowrestore.analysis.evaluate import load_image  # noqa: E402
from flowrestore.analysis.metrics import psnr_affine, ssim  # noqa: E402
from flowrestore.data.io import write_ome_zarr  # noqa: E402
from flowrestore.data.normalize import Normalization  # noqa: E402
from flowrestore.data.patches import Acquisition  # noqa: E402
from flowrestore.data.simulate import make_pair  # noqa: E402
from flowrestore.inference.predict import predict, read_prediction  # noqa: E402
from flowrestore.training.loop import train_model  # noqa: E402

SPLITS = {"train": 8, "val": 2, "test": 5}  # the "8 training acquisitions", 2 for the calibration
DEPTH = 16  # planes of the simulated specimen; its central plane is the acquisition


def acquisitions(dataset: str, shape: tuple[int, int], folder: Path) -> dict[str, list[Acquisition]]:
    """{split: acquisitions} written as 2-D OME-Zarr; seeds differ per split so no image repeats."""
    out, seed = {}, 1000
    for split, n in SPLITS.items():
        out[split] = []
        for i in range(n):
            seed += 1
            if dataset == "demo":
                wf, conf = make_pair(shape, seed)
            else:
                wf, conf = (a[DEPTH // 2] for a in make_pair((DEPTH, *shape), seed))
            paths = []
            for role, data in (("input", wf), ("target", conf)):
                path = folder / dataset / role / f"{split}{i}.ome.zarr"
                write_ome_zarr(path, data, "YX", (0.1, 0.1))
                paths.append(str(path))
            norms = [Normalization(*map(float, np.percentile(d, [0.1, 99.9]))) for d in (wf, conf)]
            out[split].append(Acquisition(f"{split}{i}", paths[0], paths[1], *norms))
    return out


def hf_power(image: np.ndarray, cutoff: float = 0.25) -> float:
    """Power of the spectrum at radial frequency > `cutoff` cycles/pixel (mean removed)."""
    spectrum = np.abs(np.fft.rfft2(image - image.mean())) ** 2
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.rfftfreq(image.shape[1])[None, :]
    return float(spectrum[np.hypot(fy, fx) > cutoff].sum())


def evaluate(model_dir: Path, ckpt: Path, items: dict, settings: dict, calibrations=("isotonic",)) -> dict:
    """Scores of one model's test predictions and its calibration fitted on val."""
    rows, pixels = [], {"val": [], "test": []}  # pixels: one Pixels per acquisition
    for split in pixels:
        for acq in items[split]:
            path = model_dir / f"{acq.name}.ome.zarr"
            predict(ckpt, acq.input_path, path, settings, normalization=acq.input_norm, device="cpu")
            pred = read_prediction(path)
            target = load_image(acq.target_path)
            tn = acq.target_norm.apply(target)
            # predict maps the network's output back with the input's percentiles
            mmse = acq.input_norm.apply(pred["mmse"])
            if split == "test":
                row = {"acq": acq.name, "psnr": psnr_affine(pred["mmse"], target), "ssim": ssim(pred["mmse"], target),
                       "hf_mmse": hf_power(mmse) / hf_power(tn)}
                if "sample_0" in pred:
                    row["hf"] = hf_power(acq.input_norm.apply(pred["sample_0"])) / hf_power(tn)
                rows.append(row)
            if "std_raw" in pred:
                std = pred["std_raw"] / (acq.input_norm.high - acq.input_norm.low)
                pixels[split].append(Pixels(split, (acq.name,), std.ravel(), (mmse - tn).ravel(), settings["samples"],
                                            intensity=mmse.ravel()))
    result = {"rows": rows}
    if pixels["val"]:
        pooled = {split: Pixels(split, sum((p.acquisitions for p in ps), ()), np.concatenate([p.std for p in ps]),
                                np.concatenate([p.error for p in ps]), settings["samples"],
                                intensity=np.concatenate([p.intensity for p in ps])) for split, ps in pixels.items()}
        result["calibrations"] = {}
        for method in calibrations:
            calibration, _ = fit(pooled["val"], method)
            result["calibrations"][method] = {"verdict": judge(calibration, pooled["test"]),
                                              "per_uce": [judge(calibration, p).uce_after for p in pixels["test"]]}
    return result


MODELS = {  # name: (method, options, net settings beside the schema's)
    "regression": ("regression", {}, {}),
    "velocity": ("guided_cfm", {"prediction": "velocity"}, {}),
    "data": ("guided_cfm", {"prediction": "data"}, {}),
    "logit": ("guided_cfm", {"time_distribution": "logit_normal"}, {}),
    "data_vloss": ("guided_cfm", {"prediction": "data", "loss": "velocity"}, {}),
    "data_vloss_logit": ("guided_cfm", {"prediction": "data", "loss": "velocity", "time_distribution": "logit_normal"}, {}),
    "velocity_group": ("guided_cfm", {"prediction": "velocity"}, {"norm": "group"}),
    "data_group": ("guided_cfm", {"prediction": "data"}, {"norm": "group"}),
    "regression_group": ("regression", {}, {"norm": "group"}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["demo", "specimen"], choices=["demo", "specimen"])
    p.add_argument("--variants", nargs="+", default=["velocity", "data"], choices=[m for m in MODELS if m != "regression"],
                   help="guided CFM variants beside the regression")
    p.add_argument("--minutes", type=float, default=2.0, help="train.minutes of every model")
    p.add_argument("--steps", type=int, default=None,
                   help="train.steps of every model instead of minutes (same network, so about the same time; "
                        "steadier than minutes on a shared machine)")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--calibrations", nargs="+", default=["isotonic", "isotonic_intensity"],
                   help="calibrate.method values compared (fit on val, judged on test); the first fills the table")
    p.add_argument("--shape", type=int, nargs=2, default=[256, 256])
    args = p.parse_args()
    torch.set_num_threads(threads())
    root = scratch("flowrestore-posterior-")
    budget = {"steps": args.steps} if args.steps else {"minutes": args.minutes, "steps": 100_000}
    train = budget | {"val_every": 100_000, "checkpoint_every": 100_000}
    settings = {"samples": args.samples, "keep_samples": 1, "prefix_means": False, "seed": 7}
    print(f"{f'{args.steps} steps' if args.steps else f'{args.minutes:g} min'} of training per model, K = {args.samples}, {SPLITS}, {threads()} threads")
    for dataset in args.datasets:
        items = acquisitions(dataset, tuple(args.shape), root / "data")
        results = {}
        for name in ["regression", *args.variants]:
            method, options, net = MODELS[name]
            out = root / dataset / name
            t0 = time.perf_counter()
            ckpt = train_model(name, method, net, train, items["train"], items["val"], out, progress=False,
                               method_options=options)
            steps = json.loads((out / "model.json").read_text())["step"]
            t1 = time.perf_counter()
            results[name] = evaluate(out, ckpt, items, settings if method != "regression" else
                                     {**settings, "samples": 1, "keep_samples": 0}, args.calibrations)
            results[name]["train_s"], results[name]["predict_s"] = t1 - t0, time.perf_counter() - t1
            results[name]["steps"] = steps
        base = {r["acq"]: r for r in results["regression"]["rows"]}
        print(f"\n== {dataset} ({SPLITS['test']} test images)")
        print(f"{'model':<11} {'PSNR':>6} {'SSIM':>6} {'dPSNR':>6} {'>=reg':>5} {'dSSIM':>6} {'HF smp':>6} "
              f"{'HF mmse':>7} {'UCE raw':>7} {'UCE cal':>7} {'cov68':>6} {'cov95':>6}  train/predict s, per-image UCE")
        for name, r in results.items():
            rows = r["rows"]
            d = [row["psnr"] - base[row["acq"]]["psnr"] for row in rows]
            ds = [row["ssim"] - base[row["acq"]]["ssim"] for row in rows]
            line = (f"{name:<11} {np.mean([x['psnr'] for x in rows]):6.2f} {np.mean([x['ssim'] for x in rows]):6.3f} "
                    f"{np.mean(d):+6.2f} {sum(x >= 0 for x in d):>3}/{len(d)} {np.mean(ds):+6.3f} ")
            hf = f"{np.mean([x['hf'] for x in rows]):6.2f}" if "hf" in rows[0] else f"{'':6}"
            line += f"{hf} {np.mean([x['hf_mmse'] for x in rows]):7.2f} "
            cals = list(r.get("calibrations", {}).items())
            if cals:
                v = cals[0][1]["verdict"]
                line += (f"{v.uce_before:7.3f} {v.uce_after:7.3f} {v.coverage_after[0.68]:6.1%} "
                         f"{v.coverage_after[0.95]:6.1%}")
            else:
                line += f"{'':7} {'':7} {'':6} {'':6}"
            line += f"  {r['train_s']:.0f}/{r['predict_s']:.0f} s, {r['steps']} steps"
            if cals:
                line += "  " + " ".join(f"{u:.3f}" for u in cals[0][1]["per_uce"]) + f"  ({cals[0][0]})"
            print(line, flush=True)
            for method, c in cals[1:]:
                v = c["verdict"]
                print(f"{'':11} calibrate.method {method}: UCE cal {v.uce_after:.3f}, cov68 {v.coverage_after[0.68]:.1%}, "
                      f"cov95 {v.coverage_after[0.95]:.1%}, per-image UCE "
                      + " ".join(f"{u:.3f}" for u in c["per_uce"]), flush=True)


if __name__ == "__main__":
    main()
