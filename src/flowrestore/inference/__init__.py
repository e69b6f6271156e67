"""Restoration of whole acquisitions: block plan, tiles, solvers, position-keyed noise, the zarr predict steps."""
