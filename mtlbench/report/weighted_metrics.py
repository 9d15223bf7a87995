"""Per-task test metrics of one run for many resamples at once: each row of a weight matrix (B, N)
says how many times each test image is counted (a bootstrap resample; all ones: the test set).

Every function equals its scikit-learn counterpart with `sample_weight` (tests/test_report_weighted_metrics.py):
AUROC (`roc_auc_score`), average precision (`average_precision_score`), accuracy, F1 and balanced
accuracy at a fixed threshold. Expected calibration error has no sklearn counterpart; its closed
forms are tested. A resample without both classes of a task gives NaN for the metrics that need both.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

ECE_BINS = 10


def tie_groups(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positive weight, negative weight) per group of tied scores, groups in ascending score order: (B, G) each.

    Runs of consecutive groups without a positive are merged into one group: neither AUROC nor AP
    can tell them apart (every positive is above or below all of them), and with rare findings this
    leaves ~2 groups per positive instead of one per image. The sums are one sparse (N × G)
    indicator per class and a matrix product, not a gather of the (B, N) weights.
    """
    n = len(scores)
    y = np.asarray(labels).astype(bool)
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    tie = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1  # tie group of each image, in score order
    has_pos = np.zeros(int(tie[-1]) + 1 if n else 0, bool)
    np.logical_or.at(has_pos, tie, y[order])
    breaks = has_pos | np.r_[True, has_pos[:-1]] if len(has_pos) else has_pos  # a new group at, and after, a positive
    merged = np.cumsum(breaks) - 1
    group = np.empty(n, np.int64)
    group[order] = merged[tie]
    size = int(merged[-1]) + 1 if n else 0
    w = np.atleast_2d(weights)
    rows = np.arange(n)
    out = []
    for member in (y, ~y):
        indicator = sp.csr_matrix((member.astype(np.float64), (rows, group)), shape=(n, size))
        out.append(np.asarray((indicator.T @ w.T).T))
    return out[0], out[1]


def auroc_from_groups(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC per row from ascending tie groups (the Mann–Whitney statistic, ties counted one half)."""
    below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each group
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def ap_from_groups(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Average precision per row from ascending tie groups: Σ_k (R_k − R_{k−1}) P_k over the distinct scores
    in descending order (sklearn's definition, no interpolation); NaN without positives."""
    pos, neg = pos[:, ::-1], neg[:, ::-1]
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    total = pos.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        return np.where(total > 0, (pos * precision).sum(axis=1) / total, np.nan)


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of one task per row of `weights`."""
    return auroc_from_groups(*tie_groups(scores, labels, weights))


def weighted_average_precision(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision of one task per row of `weights`."""
    return ap_from_groups(*tie_groups(scores, labels, weights))


def confusion(labels: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Weighted confusion counts per row of `weights` and task: tp, fp, fn, tn, each (B, T).

    `labels` and `predicted` are (N, T) binary arrays (predicted = probability ≥ the task's threshold).
    """
    y, p = np.asarray(labels, bool), np.asarray(predicted, bool)
    w = np.atleast_2d(weights)
    return {
        name: w @ mask.astype(np.float64)
        for name, mask in (("tp", y & p), ("fp", ~y & p), ("fn", y & ~p), ("tn", ~y & ~p))
    }


def accuracy(counts: dict[str, np.ndarray]) -> np.ndarray:
    """(tp + tn) / all, per row and task."""
    total = sum(counts.values())
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts["tp"] + counts["tn"]) / total


def f1(counts: dict[str, np.ndarray]) -> np.ndarray:
    """2tp / (2tp + fp + fn) per row and task; 0 where the denominator is 0 (sklearn's zero_division=0)."""
    den = 2 * counts["tp"] + counts["fp"] + counts["fn"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * counts["tp"] / den, 0.0)


def balanced_accuracy(counts: dict[str, np.ndarray]) -> np.ndarray:
    """(sensitivity + specificity) / 2 per row and task; NaN without both classes."""
    pos, neg = counts["tp"] + counts["fn"], counts["tn"] + counts["fp"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((pos > 0) & (neg > 0), 0.5 * (counts["tp"] / pos + counts["tn"] / neg), np.nan)


def expected_calibration_error(
    labels: np.ndarray, probs: np.ndarray, weights: np.ndarray, bins: int = ECE_BINS
) -> np.ndarray:
    """ECE of each task's positive-class probability per row of `weights`, (B, T).

    Equal-width bins on [0, 1] (Naeini et al., AAAI 2015; Guo et al., ICML 2017, eq. 3 for one
    class): ECE = Σ_b (n_b / n) · |mean label in b − mean probability in b|.
    """
    y, p = np.asarray(labels, np.float64), np.asarray(probs, np.float64)
    w = np.atleast_2d(weights)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)  # bin of each image and task; p = 1 in the last
    out = np.zeros((w.shape[0], y.shape[1]))
    for b in range(bins):
        inside = (which == b).astype(np.float64)
        out += np.abs(w @ (inside * y) - w @ (inside * p))  # n_b·|mean y − mean p| = |Σ y − Σ p| in the bin
    with np.errstate(invalid="ignore", divide="ignore"):
        return out / w.sum(axis=1, keepdims=True)


def reliability_curve(
    labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean probability, observed frequency, count) per equal-width bin of one task's probabilities;
    NaN where a bin is empty (the reliability diagram's points)."""
    y, p = np.asarray(labels, np.float64), np.asarray(probs, np.float64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, weights=p, minlength=bins) / count
        freq = np.bincount(which, weights=y, minlength=bins) / count
    return mean_p, freq, count
