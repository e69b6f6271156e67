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
