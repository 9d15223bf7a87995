"""What cxr14-synth's difficulty is calibrated against: published per-class AUROC on NIH's official
split, and the rank correlation of a run's per-class AUROC with it."""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

import numpy as np

from mtlbench.tasks import TASK_NAMES

PUBLISHED_AUROC: Mapping[str, float] = MappingProxyType(
    {
        "Atelectasis": 0.7003,
        "Cardiomegaly": 0.8100,
        "Effusion": 0.7585,
        "Infiltration": 0.6614,
        "Mass": 0.6933,
        "Nodule": 0.6687,
        "Pneumonia": 0.6580,
        "Pneumothorax": 0.7993,
        "Consolidation": 0.7032,
        "Edema": 0.8052,
        "Emphysema": 0.8330,
        "Fibrosis": 0.7859,
        "Pleural_Thickening": 0.6835,
        "Hernia": 0.8717,
    }
)
"""Per-class test AUROC on ChestX-ray14's official patient-wise split (25,596 test images): Wang et
al., "ChestX-ray8: Hospital-scale chest X-ray database and benchmarks on weakly-supervised
classification and localization of common thorax diseases", arXiv:1705.02315v5 (Dec 2017; the
CVPR 2017 paper extended to 14 classes), Table 4, the ChestX-ray14 column "using the published data
split" (ResNet-50, ImageNet-initialised). The 14 values were checked against a third-party
reproduction that quotes the same column (its "NIH Paper" column, all 14 to four decimals)."""


def spearman_rho(auroc: Mapping[str, float], reference: Mapping[str, float] = PUBLISHED_AUROC) -> float:
    """Spearman's rank correlation between per-task AUROCs and `reference`, over the tasks of both
    (ties ranked by their mean rank)."""
    tasks = [t for t in TASK_NAMES if t in auroc and t in reference and np.isfinite(auroc[t])]
    a = _ranks(np.array([auroc[t] for t in tasks]))
    b = _ranks(np.array([reference[t] for t in tasks]))
    return float(np.corrcoef(a, b)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their mean rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks
