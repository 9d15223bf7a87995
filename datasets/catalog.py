"""Importing this module registers every dataset loader (the registry imports it on first lookup)."""

from mtlbench.datasets import cxr14_synth, pending  # noqa: F401  (registration side effects)
