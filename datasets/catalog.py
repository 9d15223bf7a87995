"""Importing this module registers every dataset loader (the registry imports it on first lookup)."""

# isort: off  (mtlbench.registry.DATASETS lists the names in this order)
from mtlbench.datasets.cxr14_synth import loader  # noqa: F401  (registration side effects)
from mtlbench.datasets import nih_cxr14, chestmnist, chexpert, chexpert_synth, mimic_cxr, padchest, padchest_synth  # noqa: F401,E501  (registration side effects)
