"""Every compared test metric of every run, on the test set and on each bootstrap resample.

One `Resampling` (patients × seeds) per protocol; each complete run's stored test predictions give,
per metric, its per-task values on the test set (T,) and on every resample (B, T). Variants are then
compared resample by resample (`VariantMetrics`), so an interval on any difference, or on Δm%, comes
from the same draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from mtlbench.report import weighted_metrics as wm
from mtlbench.report.stats import Resampling, seed_average, task_mean

# metric → higher is better
METRICS = {"auroc": True, "ap": True, "accuracy": True, "macro_f1": True, "balanced_accuracy": True, "ece": False}
DELTA_M_METRICS = ("auroc", "ap")  # task performance metrics of Δm% (not the loss)


def choose_thresholds(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(threshold maximizing F1, threshold maximizing Youden's J) on one task's validation data; 0.5 when
    validation has one class only."""
    labelled = ~np.isnan(labels) if labels.dtype.kind == "f" else np.ones(len(labels), bool)
    labels, probs = labels[labelled], probs[labelled]
    if not 0 < labels.sum() < len(labels):
        return 0.5, 0.5
    precision, recall, thresholds = precision_recall_curve(labels, probs)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
    fpr, tpr, roc_thresholds = roc_curve(labels, probs)
    j = tpr - fpr
    j[~np.isfinite(roc_thresholds)] = -np.inf
    return float(thresholds[np.argmax(f1)]), float(roc_thresholds[np.argmax(j)])


def _per_task(
    labels: np.ndarray, probs: np.ndarray, f1_at: np.ndarray, youden_at: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Every metric per row of `weights` and task, (B, T); a task counts only its labelled images
    (labels NaN where missing), so a dataset with missing labels goes task by task."""
    if labels.dtype.kind != "f" or not np.isnan(labels).any():
        return _per_task_labelled(labels, probs, f1_at, youden_at, weights)
    per = []
    w = np.atleast_2d(weights)
    for i in range(labels.shape[1]):
        rows = ~np.isnan(labels[:, i])
        if not rows.any():  # a task the dataset does not label: no metric
            per.append({m: np.full((w.shape[0], 1), np.nan) for m in METRICS})
            continue
        per.append(
            _per_task_labelled(
                labels[rows][:, [i]].astype(np.uint8),
                probs[rows][:, [i]],
                f1_at[[i]],
                youden_at[[i]],
                w[:, rows],
            )
        )
    return {m: np.concatenate([p[m] for p in per], axis=1) for m in METRICS}


def _per_task_labelled(
    labels: np.ndarray, probs: np.ndarray, f1_at: np.ndarray, youden_at: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    groups = [wm.tie_groups(probs[:, i], labels[:, i], weights) for i in range(labels.shape[1])]
    out = {
        "auroc": np.stack([wm.auroc_from_groups(*g) for g in groups], axis=1),
        "ap": np.stack([wm.ap_from_groups(*g) for g in groups], axis=1),
        "accuracy": wm.accuracy(wm.confusion(labels, probs > 0.5, weights)),
        "macro_f1": wm.f1(wm.confusion(labels, probs >= f1_at, weights)),
        "balanced_accuracy": wm.balanced_accuracy(wm.confusion(labels, probs >= youden_at, weights)),
        "ece": wm.expected_calibration_error(labels, probs, weights),
    }
    return out


@dataclass(frozen=True)
class RunMetrics:
    """One run's per-task test metrics: `observed[m]` (T,) and `resampled[m]` (B, T)."""

    observed: dict[str, np.ndarray]
    resampled: dict[str, np.ndarray]


def run_metrics(
    labels: np.ndarray, probs: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None, design: Resampling
) -> RunMetrics:
    """Metrics of one run's test predictions; F1 and balanced-accuracy thresholds chosen on `val`
    (labels, probs) per task, or 0.5 without validation predictions."""
    t = labels.shape[1]
    f1_at, youden_at = np.full(t, 0.5), np.full(t, 0.5)
    if val is not None:
        for i in range(t):
            f1_at[i], youden_at[i] = choose_thresholds(val[0][:, i], val[1][:, i])
    observed = {m: v[0] for m, v in _per_task(labels, probs, f1_at, youden_at, np.ones((1, len(labels)))).items()}
    chunks = [_per_task(labels, probs, f1_at, youden_at, w) for w in design.weights_chunks()]
    resampled = {m: np.concatenate([c[m] for c in chunks]) for m in METRICS}
    return RunMetrics(observed, resampled)


@dataclass(frozen=True)
class VariantMetrics:
    """The runs of one variant, by seed, on one protocol's resampling design and eligible tasks."""

    by_seed: dict[int, RunMetrics]
    design: Resampling
    eligible: np.ndarray

    def seeds(self) -> list[int]:
        """Seeds with test predictions."""
        return sorted(self.by_seed)

    def per_task(self, metric: str, seeds: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(observed (T,), resampled (B, T)) seed averages of a metric over `seeds` (default: all)."""
        chosen = self.seeds() if seeds is None else seeds
        observed = np.mean([self.by_seed[s].observed[metric] for s in chosen], axis=0)
        resampled = seed_average(
            {s: self.by_seed[s].resampled[metric] for s in chosen}, self.design.seeds, self.design.seed_counts
        )
        return observed, resampled

    def statistic(self, metric: str, seeds: list[int] | None = None) -> tuple[float, np.ndarray]:
        """(observed, resampled (B,)) mean over eligible tasks of a metric."""
        observed, resampled = self.per_task(metric, seeds)
        return float(task_mean(observed, self.eligible)), task_mean(resampled, self.eligible)

    def seed_values(self, metric: str) -> np.ndarray:
        """Per seed, the mean over eligible tasks (the spread over seeds)."""
        return np.array([task_mean(self.by_seed[s].observed[metric], self.eligible) for s in self.seeds()])
