"""Label noise: the copy of the real labels that images are rendered from.

cxr14-synth draws it per finding from how NIH's labels agree with the image (agreement.py): a
labelled finding's signature is left out with probability 1 − PPV, and an unlabelled finding gets
a signature with the probability that gives NIH's label its sensitivity. The datasets that reuse
the renderer on other tables (chexpert-synth, padchest-synth) keep one rate for every finding:
SIGNATURE_DROP_RATE of positives lose their signature, and negatives gain one with probability
SPURIOUS_RATE × prevalence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtlbench.datasets.cxr14_synth.agreement import LABEL_AGREEMENT, noise_rates
from mtlbench.datasets.cxr14_synth.params import SIGNATURE_DROP_RATE, SPURIOUS_RATE
from mtlbench.datasets.cxr14_synth.rng import Draws, image_keys
from mtlbench.tasks import TASK_NAMES


def prevalence(labels: np.ndarray) -> np.ndarray:
    """Fraction of positives per task column."""
    return labels.mean(axis=0) if len(labels) else np.zeros(labels.shape[1])


def nih_noise_rates(finding_prevalence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(drop, spurious) per task for NIH's labels: from LABEL_AGREEMENT at NIH's label rates."""
    return noise_rates(LABEL_AGREEMENT, finding_prevalence)


def render_labels(
    labels: np.ndarray,
    image_names: Any,
    seed: int,
    finding_prevalence: np.ndarray,
    rates: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The noisy copy of `labels` that images are rendered from: `rates` = (drop, spurious) per
    task (see nih_noise_rates), or by default the flat rates of the module docstring."""
    if rates is None:
        rates = (np.full(len(TASK_NAMES), SIGNATURE_DROP_RATE), SPURIOUS_RATE * np.asarray(finding_prevalence))
    drop, spurious = rates
    draws = Draws(seed, image_keys(image_names))
    rendered = np.zeros(labels.shape, dtype=bool)
    for t, task in enumerate(TASK_NAMES):
        u = draws.uniform(f"label.{task}")
        positive = labels[:, t].astype(bool)
        rendered[:, t] = np.where(positive, u >= drop[t], u < spurious[t])
    return rendered
