"""The built-in demos, chosen by `demo.kind`: their acquisitions known before they exist, and their writing.

- haze: widefield/confocal pairs (simulate.write_demo), split by the name hash like your own data;
- super_resolution, deblur, isotropic: a known forward operator applied to a noise-free target
  (simulate_operators.write_known_demo), split by the name hash;
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
         "isotropic": ("input", "target"), "denoise": ("input", "target", "truth")}


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
                            sigma=demo["sigma"], photons=demo["photons"], **common)
