"""Importing this module registers every weighting method (the registry imports it on first lookup)."""

# The baseline first: `mtlbench list` and `--methods all` follow registration order.
from mtlbench.methods import ew  # noqa: F401  (registration side effects)
from mtlbench.methods import deepchest  # noqa: F401,I001
