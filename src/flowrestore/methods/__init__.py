"""Restoration methods: each file defines one method (its training loss and its sampler).

A method plugs into training and into the tiled predict engine, which know nothing else about it.
To add one: a new module here with a class decorated by `@register`, its settings block under
`$defs.methods` in the config schema, and its name in the schema's `models.*.method` enum (a
test checks the two lists agree).
"""

from __future__ import annotations

from .base import METHODS, Method, get_method, method_class, register  # noqa: F401
from . import flow_prior, guided_cfm, reference_regression, regression, relative_flow  # noqa: F401  (registration)
