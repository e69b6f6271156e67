"""DDM4IP on simulated unpaired sets: how well stages 1 and 2 learn a known anisotropic PSF (CPU budget).

Data (the project's simulator, `data.simulate.render_truth`, in-focus PSF and background as the demos):
clean images x, and, from *other* truths, degraded images y = k * x + Poisson-Gaussian noise at
`--photons` photo-electrons per unit intensity (read noise 2 e-), with k the anisotropic Gaussian PSF
of stds (2.5, 1.5) px at 30 degrees on a 15 x 15 grid, centred. Both sets are divided by `--photons`
(one intensity scale, so a PSF of sum 1 stays exact). A paired test set is held out for Wiener.

Stage 1 trains v_ref on y patches; stage 2 (`methods.ddm4ip.KernelLearner`) learns a direct 15 x 15
kernel and, separately, the 3-parameter Gaussian kernel, both from an isotropic sigma-2 start, with the
forward model's noise either signal-dependent (`--noise poisson`: variance (read / photons)^2 + A x /
photons, the data's own law to a Gaussian approximation) or white (`--noise white`, the paper's). It
prints, measured in one run:
  the kernel error ||k_hat_aligned - k||_1 / ||k||_1 (centre-of-mass alignment, Fourier) of the learned
  kernels, of the true PSF with +-10 % widths, and of the isotropic sigma-2 guess;
  PSNR (dB, data range = the clean test set's max) of Wiener deconvolution (`skimage.restoration.wiener`,
  one balance for all kernels, the best of a small grid for the true PSF) of the degraded test images
  with each kernel, and of the degraded images as they are.

    PYTHONPATH=src python bench/ddm4ip.py [--stage1-steps 2000] [--stage2-steps 800] [--channels 8] [--noise poisson]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from flowrestore.data.simulate import Microscope, _blur, _noisy, render_truth
from flowrestore.methods import ddm4ip as D
from flowrestore.models.nets import NetConfig, UNet
from flowrestore.physics.blur import Blur, gaussian_kernel

TRUE_SIGMA, TRUE_ANGLE, SIZE = (2.5, 1.5), 30.0, 15


def true_psf() -> torch.Tensor:
    return gaussian_kernel(TRUE_SIGMA, 2, angle=TRUE_ANGLE, size=SIZE)


def clean_image(shape, rng, m: Microscope) -> np.ndarray:
    """In-focus image plus background, units of intensity 1 (photo-electrons / photons), float64."""
    return (_blur(render_truth(shape, rng), m.focus_sigma) + m.background).astype(np.float64)


def degraded_image(clean: np.ndarray, psf: torch.Tensor, photons: float, rng, m: Microscope) -> np.ndarray:
    with torch.no_grad():
        expected = Blur(psf).A(torch.from_numpy(clean)[None, None])[0, 0].numpy()
    return _noisy(expected, photons, m.read_noise, rng).astype(np.float64) / photons


def make_sets(n: int, n_test: int, shape, photons: float, seed: int):
    """(clean set, degraded set from other truths, paired test (clean, degraded)), arrays (n, Y, X)."""
    m, psf = Microscope(), true_psf()
    rng = np.random.default_rng([seed, 0])
    clean = np.stack([clean_image(shape, rng, m) for _ in range(n)])
    rng = np.random.default_rng([seed, 1])
    degraded = np.stack([degraded_image(clean_image(shape, rng, m), psf, photons, rng, m) for _ in range(n)])
    rng = np.random.default_rng([seed, 2])
    test_clean = np.stack([clean_image(shape, rng, m) for _ in range(n_test)])
    test_degraded = np.stack([degraded_image(c, psf, photons, rng, m) for c in test_clean])
    return clean, degraded, (test_clean, test_degraded)


def patches(images: np.ndarray, batch: int, patch: int, rng) -> torch.Tensor:
    """(batch, 1, patch, patch) random crops of random images, float32."""
    idx = rng.integers(0, images.shape[0], batch)
    ys = rng.integers(0, images.shape[1] - patch + 1, batch)
    xs = rng.integers(0, images.shape[2] - patch + 1, batch)
    crops = [images[i, y:y + patch, x:x + patch] for i, y, x in zip(idx, ys, xs)]
    return torch.from_numpy(np.stack(crops)[:, None].astype(np.float32))


def net(channels: int) -> UNet:
    """The project's UNet (flow_prior's GroupNorm), narrower than the default 16 to fit a CPU budget."""
    return UNet(NetConfig(dims=2, in_channels=1, out_channels=1, channels=channels, norm="group"))


def stage1(degraded, steps, batch, patch, lr, channels, seed) -> UNet:
    torch.manual_seed(seed)
    v_ref = net(channels)
    opt = torch.optim.Adam(v_ref.parameters(), lr=lr, betas=D.BETAS)
    rng = np.random.default_rng([seed, 10])
    losses = []
    for s in range(steps):
        losses.append(D.flow_step(v_ref, opt, patches(degraded, batch, patch, rng), D.step_generator(seed, s)))
    print(f"stage 1: {steps} steps, loss first/last 100: {np.mean(losses[:100]):.4f} / {np.mean(losses[-100:]):.4f}")
    return v_ref


def stage2(v_ref, clean, kind, steps, batch, patch, sigma, gain, weights, lr_kernel, lr_aux, seed):
    learner = D.KernelLearner(v_ref, D.make_kernel_model(kind, SIZE, 2.0), sigma, weights, lr_kernel, lr_aux, seed,
                              gain)
    rng = np.random.default_rng([seed, 20])
    k_true = true_psf()
    for s in range(steps):
        parts = learner.step(patches(clean, batch, patch, rng), patches(clean, batch, patch, rng))
        if (s + 1) % max(1, steps // 5) == 0:
            k = learner.kernel.kernel().detach().double()
            print(f"  {kind} step {s + 1}: kernel error {D.kernel_error(k, k_true):.3f}, aux loss "
                  f"{parts['aux']:.4f}, matching {parts['matching']:+.2e}")
    return learner.kernel.kernel().detach().double()


def psnr(x: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    return float(10 * np.log10(data_range ** 2 / np.mean((x - ref) ** 2)))


def wiener_psnr(test, psf: np.ndarray, balance: float) -> float:
    """Mean PSNR (dB) over the test images of Wiener deconvolution with `psf`."""
    from skimage.restoration import wiener

    clean, degraded = test
    scores = []
    for c, y in zip(clean, degraded):
        offset = float(y.min())  # Wiener is linear; the offset needs no deconvolving (as analysis.classical)
        x = wiener(y - offset, psf, balance, clip=False) + offset
        scores.append(psnr(x, c, float(clean.max())))
    return float(np.mean(scores))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="images per unpaired set")
    ap.add_argument("--shape", type=int, default=64)
    ap.add_argument("--photons", type=float, default=1000.0)
    ap.add_argument("--stage1-steps", type=int, default=2000)
    ap.add_argument("--stage2-steps", type=int, default=800, help="per kernel model")
    ap.add_argument("--channels", type=int, default=8, help="UNet width of the first level")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3, help="stage-1 Adam learning rate")
    ap.add_argument("--lr-aux", type=float, default=1e-3)
    ap.add_argument("--lr-direct", type=float, default=3e-4)
    ap.add_argument("--lr-gaussian", type=float, default=2e-3)
    ap.add_argument("--w-sparsity", type=float, default=0.0)
    ap.add_argument("--w-centring", type=float, default=1e-4)
    ap.add_argument("--w-sum", type=float, default=1.0)
    ap.add_argument("--w-gaussian", type=float, default=10.0)
    ap.add_argument("--noise", choices=("poisson", "white"), default="poisson",
                    help="stage 2's noise model: signal-dependent (Poisson-Gaussian approximation) or white")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()
    clean, degraded, test = make_sets(a.n, 8, (a.shape, a.shape), a.photons, a.seed)
    read = Microscope().read_noise / a.photons
    if a.noise == "poisson":  # Poisson-Gaussian's Gaussian approximation: variance read^2 + A x / photons
        sigma, gain = read, 1.0 / a.photons
    else:  # the paper's white noise, its std that of Poisson-Gaussian at the degraded set's mean intensity
        sigma, gain = float(np.sqrt(degraded.mean() / a.photons + read ** 2)), 0.0
    print(f"data: {a.n} clean + {a.n} degraded {a.shape}^2 images, {a.photons:g} photons; forward-model noise "
          f"{a.noise}: std {sigma:.4f}, gain {gain:g} (units of intensity 1)")
    v_ref = stage1(degraded, a.stage1_steps, a.batch, a.patch, a.lr, a.channels, a.seed)
    t1 = time.time()
    weights = {"sparsity": a.w_sparsity, "centring": a.w_centring, "sum_to_one": a.w_sum, "gaussian": a.w_gaussian}
    learned = {}
    for kind, lr in (("direct", a.lr_direct), ("gaussian", a.lr_gaussian)):
        learned[kind] = stage2(v_ref, clean, kind, a.stage2_steps, a.batch, a.patch, sigma, gain, weights, lr,
                               a.lr_aux, a.seed)
    t2 = time.time()
    k = true_psf()
    kernels = {"learned (direct)": learned["direct"], "learned (gaussian)": learned["gaussian"], "true PSF": k,
               "true, widths +10%": gaussian_kernel(tuple(1.1 * s for s in TRUE_SIGMA), 2, angle=TRUE_ANGLE, size=SIZE),
               "true, widths -10%": gaussian_kernel(tuple(0.9 * s for s in TRUE_SIGMA), 2, angle=TRUE_ANGLE, size=SIZE),
               "isotropic sigma 2": gaussian_kernel(2.0, 2, size=SIZE)}
    balances = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    balance = max(balances, key=lambda b: wiener_psnr(test, k.numpy(), b))
    print(f"\nstage 1 {t1 - t0:.0f} s, stage 2 {t2 - t1:.0f} s (both kernels); Wiener balance {balance:g}")
    print(f"{'kernel':<22}{'kernel error':>14}{'Wiener PSNR (dB)':>18}")
    for name, kk in kernels.items():
        print(f"{name:<22}{D.kernel_error(kk, k):>14.3f}{wiener_psnr(test, kk.numpy(), balance):>18.2f}")
    none = np.mean([psnr(y, c, float(test[0].max())) for c, y in zip(*test)])
    print(f"{'no deconvolution':<22}{'':>14}{none:>18.2f}")
    for kind, kk in learned.items():
        print(f"learned {kind} kernel second moments (px^2): {D.second_moments(kk).numpy().round(3).tolist()}")
    print(f"true PSF second moments (px^2): {D.second_moments(k).numpy().round(3).tolist()}")


if __name__ == "__main__":
    main()
