"""The built-in demos, chosen by `demo.kind`: their acquisitions known before they exist, and their writing.

- haze: widefield/confocal pairs (simulate.write_demo), split by the name hash like your own data;
- super_resolution, deblur, isotropic: a known forward operator applied to a noise-free target
  (simulate_operators.write_known_demo), split by the name hash;
- unknown_blur: the same with an anisotropic Gaussian PSF (`demo.psf`) the restoration must learn
  (DDM4IP), its true PSF written beside the acquisitions as `psf.tif` (`demo_files`);
- denoise: photon-count references, lower-dose inputs and the truth (denoise_demo), splits set by the
  simulator.

The workflow (common.smk, rule demo_data) and `flowrestore train` both call these two functions.
"""

from __future__ import annotations

import os

from ..errors import InputError
from . import denoise_demo
from .simulate import write_demo

ROLES = {"haze": ("input", "target"), "super_resolution": ("input", "target"), "deblur": ("input", "target"),
         "isotropic": ("input", "target"), "unknown_blur": ("input", "target"), "denoise": ("input", "target", "truth")}


def _suffixes(demo: dict, data: dict, source=None) -> dict[str, str]:
    suffixes = {}
    for role in ROLES[demo["kind"]]:
        pattern = data.get(f"{role}_pattern", "")
        if pattern.count("{acquisition}") != 1 or not pattern.startswith("{acquisition}"):
            raise InputError(source, f"demo.kind {demo['kind']} needs data.{role}_pattern of the form "
                             f"'{{acquisition}}_{role}.tif' (got {pattern!r})",
                             f"set data.{role}_pattern, e.g. to '{{acquisition}}_{role}.tif'")
        suffixes[role] = pattern.split("{acquisition}")[1]
    return suffixes


def demo_rows(demo: dict, data: dict, source=None) -> list[tuple]:
    """(acquisition, input, target, split, truth, quality) rows of the demo (split None: by the name hash)."""
    suffixes = _suffixes(demo, data, source)
    if demo["kind"] == "denoise":
        return denoise_demo.rows(data["folder"], demo["acquisitions"], suffixes)
    return [(name, *(os.path.join(data["folder"], name + suffixes[role]) for role in ("input", "target")), None)
            for name in (f"demo{i:03d}" for i in range(demo["acquisitions"]))]


# The settings each kind reads besides make, kind, acquisitions, shape and seed.
KIND_SETTINGS = {"haze": (), "denoise": (), "super_resolution": ("factor", "sigma", "photons"),
                 "deblur": ("factor", "sigma", "photons"), "isotropic": ("factor", "sigma", "photons"),
                 "unknown_blur": ("factor", "sigma", "photons", "psf")}


def demo_settings(demo: dict) -> dict:
    """The demo settings that change the files of its kind (another kind's settings do not)."""
    others = {k for own in KIND_SETTINGS.values() for k in own} - set(KIND_SETTINGS[demo["kind"]])
    return {k: v for k, v in demo.items() if k not in others}


def demo_files(demo: dict, data: dict) -> list[str]:
    """The demo's files that belong to no acquisition (unknown_blur's true PSF)."""
    if demo["kind"] != "unknown_blur":
        return []
    from .simulate_operators import PSF_FILE

    return [os.path.join(data["folder"], PSF_FILE)]


def make_demo(demo: dict, data: dict) -> list[str]:
    """Write the demo's files into data.folder (unchanged files are left alone); returns the acquisitions."""
    suffixes = _suffixes(demo, data)
    shape = tuple(demo["shape"])
    if demo["kind"] == "denoise":
        return denoise_demo.write(data["folder"], demo["acquisitions"], shape, suffixes, seed=demo["seed"])
    common = dict(seed=demo["seed"], input_suffix=suffixes["input"], target_suffix=suffixes["target"])
    if demo["kind"] == "haze":
        return write_demo(data["folder"], demo["acquisitions"], shape, **common)
    from .simulate_operators import write_known_demo

    return write_known_demo(data["folder"], demo["acquisitions"], shape, demo["kind"], factor=demo["factor"],
                            sigma=demo["sigma"], photons=demo["photons"], psf=demo.get("psf"), **common)
