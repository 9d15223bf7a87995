"""Datasets (installed as mtlbench.datasets); importing this package registers every loader."""

from mtlbench.datasets import cxr14_synth, pending  # noqa: F401  (registration side effects)
