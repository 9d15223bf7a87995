"""Importing this module registers every dataset loader (the registry imports it on first lookup)."""

# isort: off  (import order is the order `mtlbench list` shows)
from mtlbench.datasets import cxr14_synth, nih_cxr14, chestmnist  # noqa: F401  (registration side effects)
