"""Importing this module registers every weighting method (the registry imports it on first lookup)."""

from mtlbench.methods import deepchest, ew  # noqa: F401  (registration side effects)
