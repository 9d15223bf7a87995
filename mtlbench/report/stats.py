"""Statistics of the report: paired tests over seeds, a paired bootstrap over test images, Δm%.

The bootstrap needs thousands of AUROCs per method; `weighted_auroc` computes them from one sort
per task and resampling counts (the Mann–Whitney statistic with ties counted one half).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

BOOTSTRAP_CHUNK = 100  # resamples evaluated at once


@dataclass(frozen=True)
class Difference:
    """A difference (method − reference) with its 95% CI and two-sided p-value; n = pairs used."""

    mean: float
    low: float
    high: float
    p: float
    n: int

    @classmethod
    def missing(cls, n: int = 0) -> "Difference":
        """Not computable (too few pairs)."""
        nan = float("nan")
        return cls(nan, nan, nan, nan, n)


def paired_t(values: np.ndarray, reference: np.ndarray) -> Difference:
    """Paired t-test of `values` − `reference` (one pair per seed), with the t-based 95% CI."""
    values, reference = np.asarray(values, float), np.asarray(reference, float)
    n = len(values)
    if n < 2:
        return Difference.missing(n)
    diff = values - reference
    mean, sem = diff.mean(), diff.std(ddof=1) / np.sqrt(n)
    if sem == 0:
        return Difference(float(mean), float(mean), float(mean), 1.0 if mean == 0 else 0.0, n)
    result = stats.ttest_rel(values, reference)
    half = stats.t.ppf(0.975, n - 1) * sem
    return Difference(float(mean), float(mean - half), float(mean + half), float(result.pvalue), n)


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of one task for each row of `weights` (B, N): sample i counted weights[b, i] times.

    Equal to sklearn's roc_auc_score with sample_weight; NaN where a resample has one class only.
    """
    order = np.argsort(scores, kind="mergesort")
    s, y, w = scores[order], labels[order].astype(bool), np.atleast_2d(weights)[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # tie groups in ascending score order
    pos = np.add.reduceat(w * y, starts, axis=1)
    neg = np.add.reduceat(w * ~y, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each group
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def mean_auroc_resampled(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean over tasks of the per-task AUROC, for each resample (row of `weights`); tasks undefined skipped."""
    per_task = np.stack([weighted_auroc(labels[:, t], probs[:, t], weights) for t in range(labels.shape[1])], 1)
    with np.errstate(all="ignore"):
        return np.nanmean(per_task, axis=1)


def paired_bootstrap(
    labels: np.ndarray,
    probs: list[np.ndarray],
    reference: list[np.ndarray],
    resamples: int = 1000,
    seed: int = 0,
) -> Difference:
    """Bootstrap over test images of the mean-AUROC difference, paired by image and by seed.

    `probs[s]` and `reference[s]` are (N, T) probabilities of seed s on the same N images. Each
    resample draws N images with replacement and averages the per-seed differences; the CI is the
    percentile interval, p the two-sided share of resamples on the other side of zero.
    """
    if not probs or len(probs) != len(reference):
        return Difference.missing()
    n = labels.shape[0]
    rng = np.random.default_rng(seed)
    ones = np.ones((1, n))
    observed = np.mean([mean_auroc_resampled(labels, a, ones)[0] - mean_auroc_resampled(labels, b, ones)[0]
                        for a, b in zip(probs, reference)])
    chunks = []
    for size in np.diff(np.r_[0:resamples:BOOTSTRAP_CHUNK, resamples]):  # bounded memory on NIH-sized test sets
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=int(size)).astype(np.float64)
        chunks.append(np.mean([mean_auroc_resampled(labels, a, counts) - mean_auroc_resampled(labels, b, counts)
                               for a, b in zip(probs, reference)], axis=0))
    diffs = np.concatenate(chunks)
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    tail = min(np.mean(diffs <= 0), np.mean(diffs >= 0))
    return Difference(float(observed), float(low), float(high), float(min(1.0, 2 * tail)), len(probs))


def delta_m(values: dict[str, np.ndarray], reference: dict[str, np.ndarray], lower_is_better: set[str]) -> float:
    """Δm% (Maninis et al., CVPR 2019): mean over tasks and metrics of the relative change vs the
    reference, sign-flipped for metrics where lower is better. Each value array is per task."""
    terms = []
    for metric, v in values.items():
        ref = reference[metric]
        sign = -1.0 if metric in lower_is_better else 1.0
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = sign * (np.asarray(v, float) - ref) / np.abs(ref)
        terms.append(rel[np.isfinite(rel)])
    joined = np.concatenate(terms) if terms else np.array([])
    return float(100 * joined.mean()) if joined.size else float("nan")
