"""The workflow config checked against its schema before anything runs, one error in one line.

jsonschema's own message names neither the config file nor the fix, and prints the whole schema;
this one names the file that sets the key (the last one that does, as later files win), the key,
what is wrong and what is allowed.
"""

from __future__ import annotations

import difflib
import os

import jsonschema
import yaml

from .errors import InputError

SCHEMA_NAME = "workflow/schemas/config.schema.yaml"
TYPE_WORDS = {"integer": "an integer", "number": "a number", "string": "a text", "boolean": "true or false",
              "array": "a list", "object": "a section of settings", "null": "null"}


def check_config(config: dict, schema_path: str | os.PathLike, files=(), command_line_files=()) -> None:
    """Raise an InputError for the first setting that breaks the schema.

    `files`: every config file read; `command_line_files`: those given with --configfile, which
    override the others. Per-model `train` overrides are checked against the `train` section.
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


def _source(path: list, files, command_line_files) -> str:
    """The config file that sets `path` last (command-line files override the Snakefile's)."""
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
    return "--config (command line)"


def schema_path() -> str:
    """The config schema shipped with the package (a link to workflow/schemas/config.schema.yaml
    in the source tree, the file itself in a wheel): the one source of defaults."""
    from importlib.resources import files

    return os.fspath(files("flowrestore") / "schemas" / "config.schema.yaml")


def load_schema() -> dict:
    with open(schema_path()) as fh:
        return yaml.safe_load(fh)


def with_defaults(config: dict, schema: dict) -> dict:
    """A copy of `config` with the schema's defaults filled in where a key is absent, at every
    level (what Snakemake's `validate(..., set_default=True)` does for the workflow)."""
    import copy

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
