"""Restoration methods: each file defines one method (its training loss and its velocity field).

A method plugs into training and into the tiled predict engine, which know nothing else about it.
To add one: a new module here with a class decorated by `@register`.
"""

from __future__ import annotations

from .base import Method, get_method, register, METHODS  # noqa: F401
from . import guided_cfm, regression  # noqa: F401  (registration)
