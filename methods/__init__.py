"""Weighting methods (installed as mtlbench.methods); importing this package registers them all."""

from mtlbench.methods import deepchest, ew  # noqa: F401  (registration side effects)
