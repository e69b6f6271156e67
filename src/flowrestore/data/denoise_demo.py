"""The denoising demo (`demo.kind: denoise`): photon-count acquisitions without any clean image.

Every acquisition is one field of view (`render_truth`, twice the haze demo's density) imaged twice
by the same camera, with independent noise:

- its reference (target role), at REFERENCE_DOSES photons at the brightest structure, cycling with
  the acquisition's number: the mixed-quality references a lab has;
- its input, a separate lower-dose (or reference-quality) exposure at INPUT_DOSES photons;
- its truth, the noiseless expected value of the input in the same units (ADU), float32, written for
  scoring only: no method reads it.

Camera: y = offset + gain * Poisson(e-) + N(0, read_noise^2) in ADU, stored as uint16 (CAMERA; the
config/denoise.yaml models are given the same numbers). A constant BACKGROUND (autofluorescence) keeps
every pixel's expected count above zero.

Splits are set here, not by the name hash, so that the test inputs cover every dose equally: every
4th acquisition is test (its input dose cycles with it), every 8th from the second is val. Appending
acquisitions never changes existing ones (acquisition i is seeded with (seed, i)).
"""

from __future__ import annotations

import os

import numpy as np

from ..physics import PoissonGaussian
from .simulate import _tiff_bytes, _write_if_changed, render_truth

REFERENCE_DOSES = (100, 200, 400)  # photo-electrons at truth intensity 1
INPUT_DOSES = (25, 50, 200)
BACKGROUND = 0.05  # of the brightest structure
DENSITY = 2.0
CAMERA = PoissonGaussian(gain=2.0, offset=100.0, read_noise=2.0)  # ADU per e-, ADU, ADU (1 e-)
PIXEL_SIZE = 0.1  # µm


def split(i: int) -> str:
    return "test" if i % 4 == 3 else "val" if i % 8 == 1 else "train"


def doses(i: int) -> tuple[int, int]:
    """(reference dose, input dose) of acquisition i; test acquisitions cycle through INPUT_DOSES."""
    return REFERENCE_DOSES[i % len(REFERENCE_DOSES)], INPUT_DOSES[(i // 4) % len(INPUT_DOSES)]


def expected(truth: np.ndarray, dose: float, camera: PoissonGaussian = CAMERA) -> np.ndarray:
    """Noiseless camera reading (ADU) of `truth` (0..1) at `dose` photo-electrons per unit intensity."""
    return (camera.offset + camera.gain * dose * (truth + BACKGROUND)).astype(np.float32)


def acquire(truth: np.ndarray, dose: float, rng: np.random.Generator, camera: PoissonGaussian = CAMERA) -> np.ndarray:
    """One noisy exposure (ADU, float32 before storage): Poisson-Gaussian noise around `expected`."""
    mean = expected(truth, dose, camera) - np.float32(camera.offset)
    return camera.sample_numpy(mean, rng)


def rows(folder: str, n: int, suffixes: dict[str, str], prefix: str = "demo") -> list[tuple]:
    """(acquisition, input, target, split, truth, quality) of the n acquisitions, before they exist;
    quality is the input's dose ("25 photons")."""
    out = []
    for i in range(n):
        acq = f"{prefix}{i:03d}"
        path = {role: os.path.join(folder, acq + suffix) for role, suffix in suffixes.items()}
        out.append((acq, path["input"], path["target"], split(i), path["truth"], f"{doses(i)[1]} photons"))
    return out


def _uint16(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def write(folder: str | os.PathLike, n: int, shape: tuple[int, ...], suffixes: dict[str, str], seed: int = 0,
          prefix: str = "demo") -> list[str]:
    """Write n acquisitions (input, target = reference, truth) as OME-TIFFs into `folder`; returns their names.

    `suffixes`: file-name ending per role ({"input": "_input.tif", "target": "_reference.tif", "truth":
    "_truth.tif"}); unchanged files are left alone (their mtimes too).
    """
    shape = tuple(int(s) for s in shape)
    axes = "ZYX"[-len(shape):]
    pixel_size = (3 * PIXEL_SIZE, PIXEL_SIZE, PIXEL_SIZE)[-len(shape):]
    os.makedirs(folder, exist_ok=True)
    for acq, *_ in rows(os.fspath(folder), n, suffixes, prefix):
        i = int(acq[len(prefix):])
        rng = np.random.default_rng([seed, i])
        truth = render_truth(shape, rng, density=DENSITY)
        reference_dose, input_dose = doses(i)
        images = {"target": _uint16(acquire(truth, reference_dose, rng)),
                  "input": _uint16(acquire(truth, input_dose, rng)),
                  "truth": expected(truth, input_dose)}
        for role, data in images.items():
            name = acq + suffixes[role]
            _write_if_changed(os.path.join(os.fspath(folder), name), _tiff_bytes(data, axes, pixel_size, name))
    return [r[0] for r in rows(os.fspath(folder), n, suffixes, prefix)]
