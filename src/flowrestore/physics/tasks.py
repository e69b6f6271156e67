"""The forward operator of a restoration task with a known physics model (flow_prior's `task` settings).

- `super_resolution`: optional blur on the fine grid, then lateral pixel integration by `factor`;
- `deblur`: blur by a Gaussian of std `sigma` pixels or by the PSF in the file `psf`;
- `isotropic`: optional blur, then axial integration of slabs of `factor` planes (ZYX stacks only);
- `denoise`: the identity.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from .base import LinearOperator
from .blur import Blur, GaussianBlur
from .compose import Compose
from .downsample import AreaDownsample, AxialDownsample
from .identity import Identity

TASKS = ("super_resolution", "deblur", "isotropic", "denoise")


def read_psf(path, dims: int) -> torch.Tensor:
    """A PSF image (TIFF, zarr, ...) normalised to sum 1, float64; odd edges, `dims` axes, non-negative sum."""
    from ..data.io import open_image

    try:
        psf = np.asarray(open_image(path, check_chunks=False).data, dtype=np.float64)
    except (OSError, ValueError) as error:
        raise InputError(path, f"cannot be read as a PSF ({error})", "give a TIFF or zarr image of the PSF") from None
    if psf.ndim != dims or any(n % 2 == 0 for n in psf.shape) or not np.isfinite(psf).all() or psf.sum() <= 0:
        raise InputError(path, f"is a PSF of shape {psf.shape}; it needs {dims} axes of odd size, finite values and a "
                         "positive sum", "crop it to odd edges centred on its peak")
    return torch.from_numpy(psf / psf.sum())


def blur_of(options: dict, dims: int, source=None) -> LinearOperator | None:
    if options.get("psf"):
        return Blur(read_psf(options["psf"], dims))
    if options.get("sigma", 0) > 0:
        return GaussianBlur(options["sigma"], dims=dims)
    return None


def task_operator(options: dict, dims: int, source=None) -> LinearOperator:
    """A of the task named by options["task"], acting on (batch, channels, *fine grid) tensors.

    Raises an InputError naming `source` for a task without the settings it needs.
    """
    task = options["task"]
    blur = blur_of(options, dims, source)
    if task == "super_resolution":
        if options["factor"] < 2:
            raise InputError(source, "task super_resolution needs a factor of at least 2", "set options.factor (e.g. 4)")
        area = AreaDownsample(options["factor"], dims=dims)
        return area if blur is None else Compose([blur, area])
    if task == "isotropic":
        if dims != 3:
            raise InputError(source, f"task isotropic restores ZYX stacks, not {dims}D images",
                             "give 3D acquisitions, or choose task super_resolution for Y and X")
        if options["factor"] < 2:
            raise InputError(source, "task isotropic needs a factor of at least 2", "set options.factor (e.g. 4)")
        axial = AxialDownsample(options["factor"])
        return axial if blur is None else Compose([blur, axial])
    if task == "deblur":
        if blur is None:
            raise InputError(source, "task deblur needs a PSF", "set options.sigma (pixels) or options.psf (a file)")
        return blur
    if task == "denoise":
        return Identity()
    raise InputError(source, f"unknown task {task!r}", f"choose one of {', '.join(TASKS)}")
