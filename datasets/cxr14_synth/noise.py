"""Label noise: the copy of the real labels that images are rendered from.

Each positive finding's signature is left out with probability SIGNATURE_DROP_RATE, and each
negative finding gets a spurious signature with probability SPURIOUS_RATE x its prevalence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtlbench.datasets.cxr14_synth.params import SIGNATURE_DROP_RATE, SPURIOUS_RATE
from mtlbench.datasets.cxr14_synth.rng import Draws, image_keys
from mtlbench.tasks import TASK_NAMES


def prevalence(labels: np.ndarray) -> np.ndarray:
    """Fraction of positives per task column."""
    return labels.mean(axis=0) if len(labels) else np.zeros(labels.shape[1])


def render_labels(labels: np.ndarray, image_names: Any, seed: int, finding_prevalence: np.ndarray) -> np.ndarray:
    """The noisy copy of `labels` that images are rendered from (see the module docstring)."""
    draws = Draws(seed, image_keys(image_names))
    rendered = np.zeros(labels.shape, dtype=bool)
    for t, task in enumerate(TASK_NAMES):
        u = draws.uniform(f"label.{task}")
        positive = labels[:, t].astype(bool)
        rendered[:, t] = np.where(positive, u >= SIGNATURE_DROP_RATE, u < SPURIOUS_RATE * finding_prevalence[t])
    return rendered
