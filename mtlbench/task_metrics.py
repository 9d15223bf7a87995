"""Per-task classification metrics (scikit-learn), computed once per evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

THRESHOLD = 0.5


@dataclass(frozen=True)
class TaskMetrics:
    """Metrics of one split, one value per task (NaN where undefined)."""

    loss: np.ndarray
    accuracy: np.ndarray
    auroc: np.ndarray
    ap: np.ndarray

    def mean(self) -> dict[str, float]:
        """Task means, ignoring tasks where a metric is undefined (one class only)."""
        return {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in self.__dict__.items()}


def _per_task(score_fn, labels: np.ndarray, probs: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    out = np.full(labels.shape[1], np.nan)
    for t in range(labels.shape[1]):
        rows = labelled[:, t]
        y = labels[rows, t]
        if 0 < y.sum() < len(y):  # AUROC/AP undefined with one class present
            out[t] = score_fn(y, probs[rows, t])
    return out


def task_metrics(labels: np.ndarray, probs: np.ndarray, losses: np.ndarray) -> TaskMetrics:
    """AUROC, average precision, accuracy at p > 0.5 and mean loss, per task, over the images that
    have a label for the task.

    labels (N, T) in {0, 1} (float with NaN where a label is missing), probs (N, T) = P(finding
    present), losses (T,) mean losses. A task without a labelled image has NaN metrics.
    """
    labels = np.asarray(labels)
    labelled = ~np.isnan(labels) if labels.dtype.kind == "f" else np.ones(labels.shape, bool)
    labels = np.where(labelled, labels, 0).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    hits = ((probs > THRESHOLD) == labels) & labelled
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = hits.sum(axis=0) / labelled.sum(axis=0)
    return TaskMetrics(
        loss=np.asarray(losses, dtype=np.float64),
        accuracy=accuracy,
        auroc=_per_task(roc_auc_score, labels, probs, labelled),
        ap=_per_task(average_precision_score, labels, probs, labelled),
    )
