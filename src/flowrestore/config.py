"""The config schema: the one source of defaults, and the check of a config against it.

`defaults(section)` and `settings(section, given)` give the library the same defaults as the
workflow (workflow/schemas/config.schema.yaml links to the copy in this package, which an
installed package carries). `check_config` stops a run with one line: jsonschema's own message
names neither the config file nor the fix, and prints the whole schema; this one names the file
that sets the key (the last one that does, as later files win), the key, what is wrong and what
is allowed.
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
from importlib import resources
from collections.abc import Mapping

import jsonschema
import yaml

from .errors import InputError

SCHEMA_NAME = "workflow/schemas/config.schema.yaml"
SCHEMA_PATH = resources.files("flowrestore") / "config.schema.yaml"
TYPE_WORDS = {"integer": "an integer", "number": "a number", "string": "a text", "boolean": "true or false",
              "array": "a list", "object": "a section of settings", "null": "null"}


def check_config(config: dict, schema_path: str | os.PathLike, files=(), command_line_files=()) -> None:
    """Raise an InputError for the first setting that breaks the schema.

    `files`: every config file read; `command_line_files`: those given with --configfile, which
    override the others. Per-model `train` overrides are checked against the `train` section, and
    each model's `options` against its method's block `$defs.methods.<method>`.
    """
    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(config))
    if error is None:
        train = jsonschema.validators.validator_for(schema)(schema["properties"]["train"])
        for name, model in (config.get("models") or {}).items():
            overrides = model.get("train") if isinstance(model, dict) else None
            error = jsonschema.exceptions.best_match(train.iter_errors(overrides or {}))
            if error is not None:
                error.path.extendleft(["models", name, "train"][::-1])
                break
            options = schema["$defs"]["methods"].get(model.get("method"), {})
            error = jsonschema.exceptions.best_match(
                jsonschema.validators.validator_for(schema)(options).iter_errors(model.get("options") or {}))
            if error is not None:
                error.path.extendleft(["models", name, "options"][::-1])
                break
    if error is None:
        return
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))[0]
        path.append(extra)
        guess = difflib.get_close_matches(str(extra), known, n=1)
        where = ".".join(map(str, path[:-1])) or "the top level"
        problem = f"unknown setting {_dotted(path)}"
        fix = (f"did you mean {_dotted(path[:-1] + guess)}?" if guess
               else f"remove it; {where} takes {', '.join(known)}") + f" (all settings: {SCHEMA_NAME})"
    else:
        problem = f"setting {_dotted(path)}: {error.message}"
        fix = f"use {_allowed(error.schema)} (all settings: {SCHEMA_NAME})"
    raise InputError(_source(path, files, command_line_files), problem, fix)


# Settings that change how fast or where a job runs, never its outputs: they are not rule params,
# so changing them plans no job. train.compile is one: on a GPU a compiled network may round
# differently, but GPU training is not bit-reproducible anyway (atomics in the convolutions'
# backward pass), so it changes nothing that a plain rerun would not.
RUNTIME = {"train": ("workers", "device", "compile"), "predict": ("device", "shards", "batch", "group")}
# Which acquisitions get predicted: each prediction's own output does not depend on it.
SELECTION = {"predict": ("splits", "acquisitions")}
# Paths in the config: relative ones are read against the folder of the config file that sets them.
PATHS = (("data", "folder"), ("data", "samples"), ("kernel", "true_psf"))
LEARNED = "learned"  # a PSF setting naming the kernel that rule learn_kernel learns


def result_settings(section: str, settings: dict) -> dict:
    """The settings of a section that can change a job's outputs (sorted, so their record is stable)."""
    drop = RUNTIME.get(section, ()) + SELECTION.get(section, ())
    return {k: settings[k] for k in sorted(settings) if k not in drop}


def without_runtime(config: dict) -> dict:
    """A copy of the config without the runtime settings (per-model train overrides included), its
    keys sorted at every level: the order in which config files and defaults filled them in is no
    change (Snakemake compares params as they are ordered)."""
    out = {k: (result_settings(k, v) if k in RUNTIME and isinstance(v, dict) else v) for k, v in config.items()}
    if isinstance(config.get("models"), dict):
        out["models"] = {name: ({**m, "train": result_settings("train", m["train"])} if isinstance(m.get("train"), dict)
                                else m) for name, m in config["models"].items()}
    return _sorted(out)


def _sorted(node):
    if isinstance(node, Mapping):
        return {k: _sorted(node[k]) for k in sorted(node)}
    return [_sorted(v) for v in node] if isinstance(node, list) else node


def canonical_path(path: str | os.PathLike, base: str | os.PathLike | None = None) -> str:
    """One spelling per file: relative to the working directory when inside it, else absolute.

    `path` is read against `base` (default: the working directory) when relative; symbolic links
    and `..` are resolved, so every spelling of the same file gives the same text, and Snakemake
    sees the same inputs (its 'input' rerun trigger compares path texts).
    """
    cwd = os.path.realpath(os.getcwd())
    full = os.path.realpath(os.path.join(base or cwd, os.path.expanduser(os.fspath(path))))
    return os.path.relpath(full, cwd) if full == cwd or full.startswith(cwd + os.sep) else full


def resolve_paths(config: dict, files=(), command_line_files=(), command_line_config: Mapping | None = None) -> dict:
    """Rewrite the config's relative paths against the config file that sets them, in place.

    data.folder, data.samples and each predict.acquisitions value; a path from --config
    (`command_line_config`: the --config settings alone) or from the schema's defaults is read
    against the working directory. Returns {dotted key: the file
    that set it} for messages.
    """
    paths = [list(p) for p in PATHS] + [["predict", "acquisitions", name]
                                        for name in (config.get("predict", {}).get("acquisitions") or {})]
    # PSF files: a model's options.psf and the evaluation's PSFs; `learned` names rule learn_kernel's kernel
    paths += [["models", name, "options", "psf"] for name, model in (config.get("models") or {}).items()
              if isinstance((model or {}).get("options"), Mapping)
              and model["options"].get("psf") not in (None, "", LEARNED)]
    paths += [["evaluate", "psfs", label] for label, value in ((config.get("evaluate") or {}).get("psfs") or {}).items()
              if isinstance(value, str) and value != LEARNED]
    sources = {}
    for path in paths:
        node = config
        for key in path[:-1]:
            node = node.get(key, {})
        if not node.get(path[-1]):
            continue
        on_command_line = _lookup(command_line_config or {}, path) is not None
        source = None if on_command_line else _source(path, files, command_line_files, default=None)
        node[path[-1]] = canonical_path(node[path[-1]], os.path.dirname(os.path.abspath(source)) if source else None)
        sources[".".join(path)] = source or ("--config (command line)" if on_command_line else "the defaults")
    return sources


def _lookup(node, path: list):
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def model_settings(config: dict, source=None) -> dict[str, dict]:
    """{model: {method, options, net, train}} with every default filled in: each model's own options
    and net over the schema's, its train overrides over the `train` section (an InputError naming
    `source` for an unknown key or a bad value)."""
    out = {}
    for name, model in config["models"].items():
        out[name] = {"method": model["method"],
                     "options": settings(f"$defs.methods.{model['method']}", model.get("options"), source),
                     "net": settings("$defs.net", model.get("net"), source),
                     "train": settings("train", config.get("train", {}) | (model.get("train") or {}), source)}
    return out


def check_sizes(config: dict, models: dict, files=(), command_line_files=()) -> None:
    """Raise an InputError when a size that meets a model's network does not fit it.

    `models`: {name: {"net": {"multipliers": [...]}, "train": {"patch_size": ...}}} with defaults
    filled in. The tile, overlap and training patch must suit every model's down-sampling factor
    2^(levels-1); checked when the workflow is parsed, so no job starts (and no store is made)
    with a size that fails inside the network.
    """
    from .inference.tiling import size_problem

    predict = config.get("predict", {})
    for name, model in models.items():
        # a model's net section holds what its config sets (Snakemake fills no defaults behind a $ref)
        levels = len(model["net"].get("multipliers", defaults("$defs.net")["multipliers"]))
        factor = 2 ** (levels - 1)
        found = size_problem(predict.get("tile"), predict.get("overlap", 0), factor)
        patch = model["train"]["patch_size"]
        if found is None and any(p % factor for p in (patch if isinstance(patch, list) else [patch])):
            found = ("train.patch_size", f"{patch} is not a multiple of {factor}, the network's down-sampling factor",
                     f"use a multiple of {factor}")
        if found is None:
            continue
        setting, problem, fix = found
        path = setting.split(".")
        if setting == "train.patch_size" and "patch_size" in (config["models"][name].get("train") or {}):
            path = ["models", name, "train", "patch_size"]
        where = _source(path, files, command_line_files, default=None) or \
            _source(["models", name, "net", "multipliers"], files, command_line_files)
        raise InputError(where, f"setting {'.'.join(path)}: {problem} of model {name} ({levels} levels)",
                         f"{fix} (all settings: {SCHEMA_NAME})")


def _dotted(path: list) -> str:
    return ".".join(map(str, path)) or "the config"


def _allowed(schema: dict) -> str:
    """'an integer >= 1 (default 16)' from a property's schema."""
    types = schema.get("type", [])
    words = [TYPE_WORDS.get(t, t) for t in (types if isinstance(types, list) else [types])]
    text = " or ".join(words) or "a valid value"
    if "enum" in schema:
        text = "one of " + ", ".join(map(str, schema["enum"]))
    bounds = [f"{op} {schema[key]}" for key, op in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                                                      ("exclusiveMaximum", "<")) if key in schema]
    if bounds:
        text += " " + " and ".join(bounds)
    if "default" in schema:
        text += f" (default {schema['default']!r})"
    return text


def _source(path: list, files, command_line_files, default: str | None = "--config (command line)") -> str | None:
    """The config file that sets `path` last (command-line files override the Snakefile's); `default`
    when none does."""
    ordered = [f for f in files if f not in command_line_files] + list(command_line_files)
    for file in reversed(ordered):
        try:
            with open(file) as fh:
                node = yaml.safe_load(fh)
        except (OSError, yaml.YAMLError):
            continue
        for key in path:
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and isinstance(key, int) and key < len(node):
                node = node[key]
            else:
                break
        else:
            return os.fspath(file)
    return default


@functools.lru_cache(maxsize=None)
def schema() -> dict:
    """The config schema (a dict; do not modify it)."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def section_schema(section: str) -> dict:
    """The schema of a dotted section: 'train', 'predict', '$defs.net', '$defs.methods.guided_cfm'."""
    node = schema()
    for key in section.split("."):
        node = node[key] if key.startswith("$") or "properties" not in node else node["properties"][key]
        if key.startswith("$"):
            continue
        while "$ref" in node:  # local references only: '#/$defs/...'
            node = functools.reduce(lambda n, k: n[k], node["$ref"].lstrip("#/").split("/"), schema())
    return node


def defaults(section: str) -> dict:
    """{setting: default} of a section, fresh copies (safe to modify)."""
    props = section_schema(section).get("properties", {})
    return {k: copy.deepcopy(v["default"]) for k, v in props.items() if "default" in v}


def settings(section: str, given: dict | None = None, source: str | os.PathLike | None = None) -> dict:
    """`given` over the section's defaults, checked against the schema.

    An unknown key (a misspelt `nfes`) or a bad value raises an InputError naming `source`, the key
    and the closest known key, instead of being ignored.
    """
    given = dict(given or {})
    node = section_schema(section)
    known = list(node.get("properties", {}))
    for key in given:
        if key not in known and node.get("additionalProperties", True) is False:
            guess = difflib.get_close_matches(str(key), known, n=1)
            fix = f"did you mean {guess[0]!r}?" if guess else f"{section} takes {', '.join(known) or 'no settings'}"
            raise InputError(source, f"unknown setting {key!r} in {section}", fix + f" (all settings: {SCHEMA_NAME})")
    merged = defaults(section) | given
    error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema())(node).iter_errors(merged))
    if error is not None:
        key = ".".join(map(str, error.absolute_path)) or section
        raise InputError(source, f"setting {section}.{key}: {error.message}", f"use {_allowed(error.schema)}")
    return merged


def schema_path() -> str:
    """The config schema shipped with the package (workflow/schemas/config.schema.yaml links to it)."""
    return os.fspath(SCHEMA_PATH)


def load_schema() -> dict:
    """A fresh copy of the schema (safe to modify)."""
    return copy.deepcopy(schema())


def with_defaults(config: dict, schema: dict) -> dict:
    """A copy of `config` with the schema's defaults filled in where a key is absent, at every
    level (what Snakemake's `validate(..., set_default=True)` does for the workflow)."""
    out = copy.deepcopy(config if config is not None else schema.get("default", {}))
    if not isinstance(out, dict) or schema.get("type") not in ("object", None):
        return out
    properties = schema.get("properties", {})
    for key, sub in properties.items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = with_defaults(out[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in set(out) - set(properties):
            out[key] = with_defaults(out[key], extra)
    return out
