"""Lengths in the units image files use, converted to micrometres; plausible pixel sizes.

Sources of the unit names:
- OME-XML `UnitsLength` (ome.xsd 2016-06): SI symbols from ym to Ym, Å, thou, in, ft, yd, mi,
  ua, ly, pc, pt ("li", a line, is left out: its length varies), "pixel" and "reference frame";
  `PhysicalSize*Unit` defaults to µm.
- OME-NGFF 0.4/0.5 axis `unit`: the UDUNITS-2 length names (angstrom ... nanometer, micrometer,
  millimeter ... parsec, inch, foot, yard, mile).
- ImageJ `unit`/`yunit`/`zunit` in the TIFF description: free text that Fiji writes as "micron",
  "µm" (or "\\u00B5m"), "um", "nm", "mm", "cm", "m", "inch", "pixel" ...
- TIFF ResolutionUnit: 1 none, 2 inch, 3 centimetre (TIFF 6.0, section 8).

`micrometres(unit)` gives the factor to µm, None for a unit that names no physical length (pixel,
reference frame, none) and raises `UnknownUnit` for anything else, so that a misspelt or exotic unit
is refused rather than silently read as µm.
"""

from __future__ import annotations

# SI prefixes: symbol, name, power of ten relative to the metre.
_PREFIXES = [("Y", "yotta", 24), ("Z", "zetta", 21), ("E", "exa", 18), ("P", "peta", 15), ("T", "tera", 12),
             ("G", "giga", 9), ("M", "mega", 6), ("k", "kilo", 3), ("h", "hecto", 2), ("da", "deca", 1),
             ("", "", 0), ("d", "deci", -1), ("c", "centi", -2), ("m", "milli", -3), ("µ", "micro", -6),
             ("n", "nano", -9), ("p", "pico", -12), ("f", "femto", -15), ("a", "atto", -18), ("z", "zepto", -21),
             ("y", "yocto", -24)]
_INCH = 25400.0  # µm, exact
# Symbols are case-sensitive (Mm is a megametre, mm a millimetre); names are not.
_SYMBOLS = {f"{symbol}m": 10.0 ** (power + 6) for symbol, _, power in _PREFIXES}
_SYMBOLS |= {"μm": 1.0, "um": 1.0, "\u00c5": 1e-4, "\u212b": 1e-4, "in": _INCH, "thou": _INCH / 1000, "mil": _INCH / 1000,
             "ft": _INCH * 12, "yd": _INCH * 36, "mi": _INCH * 63360, "pt": _INCH / 72,
             "ua": 1.495978707e17, "ly": 9.4607304725808e21, "pc": 3.0856775814913673e22}
_NAMES = {f"{name}{metre}": 10.0 ** (power + 6) for _, name, power in _PREFIXES for metre in ("meter", "metre")}
_NAMES |= {"micron": 1.0, "angstrom": 1e-4, "ångström": 1e-4, "inch": _INCH, "foot": _INCH * 12, "feet": _INCH * 12,
           "yard": _INCH * 36, "mile": _INCH * 63360, "parsec": 3.0856775814913673e22}
# Units that name no physical length: the size is unknown, not wrong.
NO_LENGTH = {"", "pixel", "pixels", "px", "reference frame", "referenceframe", "none", "unit", "units"}

# Pixel sizes a light or electron microscope can give, in µm: from 0.1 nm (EM) to 50 µm (macroscopes,
# light-sheet at low zoom). Outside this, a calibration is some other program's default, such as the
# print resolution image editors write (72 dpi = 352.8 µm, 96 dpi = 264.6 µm, 300 dpi = 84.7 µm).
PLAUSIBLE = (1e-4, 50.0)
# Whole-number resolutions in pixels per inch up to this are print/screen settings (>= 21 µm pixels),
# not a microscope's calibration, even when they fall inside PLAUSIBLE.
EDITOR_DPI = 1200


class UnknownUnit(ValueError):
    """A length unit that is neither known nor a 'no physical unit' marker."""


def micrometres(unit: str | None) -> float | None:
    """Micrometres per `unit` (e.g. "nm" -> 0.001, "nanometer" -> 0.001); None if it names no length.

    Raises UnknownUnit for a unit this table does not know.
    """
    if unit is None:
        return None
    text = str(unit).strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ")
    if text.lower() in NO_LENGTH:
        return None
    if text in _SYMBOLS:
        return _SYMBOLS[text]
    name = text.lower()
    for candidate in (name, name[:-1] if name.endswith("s") else None):  # "microns", "nanometers"
        if candidate in _NAMES:
            return _NAMES[candidate]
    raise UnknownUnit(f"unknown length unit {unit!r}")


def implausible(size_um: float) -> str | None:
    """Why a pixel size in µm cannot be a microscope's (None if it can)."""
    if not size_um > 0 or size_um != size_um:
        return f"pixel size {size_um:g} µm is not positive"
    if not PLAUSIBLE[0] <= size_um <= PLAUSIBLE[1]:
        return f"pixel size {size_um:g} µm is outside {PLAUSIBLE[0]:g}-{PLAUSIBLE[1]:g} µm"
    return None


def editor_dpi(pixels_per_inch: float) -> bool:
    """A whole number of pixels per inch up to EDITOR_DPI: what image editors and screens write."""
    return 0 < pixels_per_inch <= EDITOR_DPI and abs(pixels_per_inch - round(pixels_per_inch)) < 1e-6


# ---------------------------------------------------------------------------- reading sizes from metadata

UNIT = "micrometer"  # the NGFF name of the unit every known size is given in


def _tiff_resolution(page, axis: str) -> float | None:
    """Pixels per ResolutionUnit along X or Y, or None without a (non-zero) tag."""
    tag = page.tags.get(f"{axis}Resolution")
    if tag is None or not tag.value[0] or not tag.value[1]:
        return None
    return tag.value[0] / tag.value[1]


def tiff_sizes(tif, series_index: int = 0) -> tuple[dict[str, float], dict[str, str]]:
    """({axis: µm}, {axis: why unknown}) from OME-XML, else ImageJ metadata, else resolution tags.

    OME: `PhysicalSize{X,Y,Z}` in `PhysicalSize*Unit` (default µm, ome.xsd). ImageJ: X/YResolution are
    pixels per `unit` (`yunit` for Y when given), `spacing` is in `zunit` (else `unit`); without a unit
    ImageJ itself falls back to the ResolutionUnit tag. Plain TIFF: X/YResolution in pixels per
    ResolutionUnit (2 inch, the TIFF default, 3 cm; 1 none: no physical size). Raises UnknownUnit.
    """
    sizes: dict[str, float] = {}
    why: dict[str, str] = {}
    if tif.is_ome and tif.ome_metadata:
        import tifffile

        try:
            images = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
            pixels = (images[series_index] if isinstance(images, list) else images)["Pixels"]
        except (KeyError, TypeError, IndexError):
            pixels = {}
        for ax in "XYZ":
            if f"PhysicalSize{ax}" not in pixels:
                why[ax] = f"no OME PhysicalSize{ax}"
                continue
            unit = pixels.get(f"PhysicalSize{ax}Unit", "µm")
            factor = micrometres(unit)
            if factor is None:
                why[ax] = f"OME PhysicalSize{ax}Unit {unit!r}"
            else:
                sizes[ax] = float(pixels[f"PhysicalSize{ax}"]) * factor
        if sizes:
            return sizes, why
        why = {}
    page = tif.pages.first
    res_unit = page.tags.get("ResolutionUnit")
    res_unit = 2 if res_unit is None else int(res_unit.value)  # TIFF 6.0: absent means inch
    tag_unit = {2: "inch", 3: "cm"}.get(res_unit)
    ij = (tif.imagej_metadata or {}) if tif.is_imagej else None
    for ax in "XY":
        per_unit = _tiff_resolution(page, ax)
        unit = tag_unit
        if ij is not None:
            unit = ij.get("yunit" if ax == "Y" and "yunit" in ij else "unit", tag_unit)
        if per_unit is None:
            why[ax] = f"no {ax}Resolution tag"
            continue
        factor = micrometres(unit)
        if factor is None:
            why[ax] = "ResolutionUnit none" if unit is None else f"ImageJ unit {unit!r}"
        elif unit == "inch" and editor_dpi(per_unit):
            why[ax] = f"{per_unit:g} dpi, an image editor's print resolution"
        else:
            sizes[ax] = factor / per_unit
    if ij is not None and "spacing" in ij:
        unit = ij.get("zunit", ij.get("unit", tag_unit))
        factor = micrometres(unit)
        if factor is None:
            why["Z"] = "no ImageJ unit" if unit is None else f"ImageJ unit {unit!r}"
        else:
            sizes["Z"] = float(ij["spacing"]) * factor
    else:
        why["Z"] = "no ImageJ spacing" if ij is not None else "a plain TIFF gives no Z spacing"
    return sizes, why


def ngff_scale(multiscale: dict, dataset: dict) -> list[float] | None:
    """The scale of one dataset: its own `scale` transformations times the multiscale's (NGFF 0.4
    section "multiscales": the multiscale-level list applies after each dataset's). Translations do
    not change the pixel size; a transformation stored in a file (`path`) is not supported."""
    scale = None
    for transform in list(dataset.get("coordinateTransformations", [])) + list(multiscale.get("coordinateTransformations", [])):
        if transform.get("type") != "scale":
            continue
        if "scale" not in transform:
            raise ValueError("its scale is stored in a file (coordinateTransformations 'path')")
        values = [float(v) for v in transform["scale"]]
        scale = values if scale is None else [a * b for a, b in zip(scale, values, strict=True)]
    return scale


def resolve(kept: str, sizes: dict[str, float], why: dict[str, str], bare: dict[str, float] | None = None
            ) -> tuple[tuple[float, ...], tuple[str | None, ...], str]:
    """(pixel_size, units, note) for the kept axes: µm where known and plausible, else the bare
    scale (1 when absent) with no unit, and one line saying why."""
    bare = bare or {}
    pixel_size, units, reasons = [], [], {}
    for ax in kept:
        size = sizes.get(ax)
        reason = implausible(size) if size is not None else why.get(ax, "not given")
        if reason is None:
            pixel_size.append(float(size))
            units.append(UNIT)
        else:
            pixel_size.append(float(bare.get(ax, 1.0)) if size is None else 1.0)
            units.append(None)
            reasons.setdefault(reason, []).append(ax)
    note = ""
    if reasons:
        note = "pixel size unknown: " + "; ".join(f"{', '.join(axes)}: {reason}" for reason, axes in reasons.items())
    return tuple(pixel_size), tuple(units), note
