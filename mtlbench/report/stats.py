"""Statistics of the report: a bootstrap that resamples patients and seeds jointly, paired
differences with percentile intervals, Holm's step-down adjustment, paired t over seeds, Δm%.

The unit of resampling is the patient, not the image: NIH ChestX-ray14 holds ~3.6 images per
patient and images of one patient are correlated, so an image bootstrap gives intervals too
narrow. Each resample draws the test set's patients with replacement (every image of a drawn
patient counts once per draw) and, with several seeds, the seeds with replacement; the same
draws serve every variant, so any two variants' statistics are paired resample by resample.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy import stats

CHUNK = 100  # resamples evaluated at once: bounded memory on NIH-sized test sets


@dataclass(frozen=True)
class Difference:
    """An estimate with its 95% interval and two-sided p-value against 0 (NaN: no test); n = pairs used.
    `p_floor` is the smallest p the test can give (1/B-order for a bootstrap of B resamples)."""

    mean: float
    low: float
    high: float
    p: float
    n: int
    p_floor: float = 0.0

    @classmethod
    def missing(cls, n: int = 0) -> "Difference":
        """Not computable (too few pairs, no predictions)."""
        nan = float("nan")
        return cls(nan, nan, nan, nan, n)


def paired_t(values: np.ndarray, reference: np.ndarray) -> Difference:
    """Paired t-test of `values` − `reference` (one pair per seed), with the t-based 95% CI.

    A difference that is the same for every seed has no spread to test: its p is NaN (not 0), its
    interval the single value.
    """
    values, reference = np.asarray(values, float), np.asarray(reference, float)
    n = len(values)
    if n < 2:
        return Difference.missing(n)
    diff = values - reference
    mean, sem = diff.mean(), diff.std(ddof=1) / np.sqrt(n)
    if sem == 0:
        return Difference(float(mean), float(mean), float(mean), float("nan"), n)
    result = stats.ttest_rel(values, reference)
    half = stats.t.ppf(0.975, n - 1) * sem
    return Difference(float(mean), float(mean - half), float(mean + half), float(result.pvalue), n)


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979) of one family; NaN entries are not tests and stay NaN.

    Sorted ascending p_(1) ≤ … ≤ p_(m): adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)).
    """
    p = np.asarray(pvalues, float)
    out = np.full_like(p, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    if m == 0:
        return out
    order = tested[np.argsort(p[tested], kind="mergesort")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def eligible_tasks(labels: np.ndarray, min_positives: int) -> np.ndarray:
    """Boolean mask of the tasks with at least `min_positives` positives (and one negative) among the labelled
    images of `labels` (N, T; NaN where a label is missing)."""
    labels = np.asarray(labels)
    labelled = (~np.isnan(labels)).sum(axis=0) if labels.dtype.kind == "f" else len(labels)
    positives = np.nansum(labels, axis=0) if labels.dtype.kind == "f" else labels.sum(axis=0)
    return (positives >= max(min_positives, 1)) & (positives < labelled)


@dataclass(frozen=True)
class Resampling:
    """The protocol's bootstrap design: test patients and seeds drawn with replacement, B times.

    `weights_chunks()` yields the image weights chunk by chunk, the same every call, so every variant
    is evaluated on the same draws; `seed_counts` (B, S) are the seed draws (all ones with one seed).
    """

    patient_index: np.ndarray  # (N,) index of each test image's patient in 0..K−1
    seeds: tuple[int, ...]
    resamples: int
    rng_seed: int = 0

    @classmethod
    def of(cls, patient_ids: np.ndarray, seeds: tuple[int, ...], resamples: int, rng_seed: int = 0) -> "Resampling":
        """The design for test images of `patient_ids` (one id per image) and the protocol's seeds."""
        _, index = np.unique(np.asarray(patient_ids), return_inverse=True)
        return cls(index.astype(np.int64), tuple(seeds), int(resamples), rng_seed)

    @property
    def patients(self) -> int:
        """K, the number of test patients."""
        return int(self.patient_index.max()) + 1 if len(self.patient_index) else 0

    @property
    def seed_counts(self) -> np.ndarray:
        """(B, S) times each seed is drawn per resample (a separate stream from the patients')."""
        s = len(self.seeds)
        rng = np.random.default_rng([self.rng_seed, 1])
        if s == 1:
            return np.ones((self.resamples, 1))
        return rng.multinomial(s, np.full(s, 1.0 / s), size=self.resamples).astype(np.float64)

    def weights_chunks(self) -> Iterator[np.ndarray]:
        """Image weights (b, N) of successive chunks of resamples: patient draw counts mapped to images."""
        rng = np.random.default_rng([self.rng_seed, 0])
        k = self.patients
        for size in np.diff(np.r_[0 : self.resamples : CHUNK, self.resamples]):
            counts = rng.multinomial(k, np.full(k, 1.0 / k), size=int(size)).astype(np.float64)
            yield counts[:, self.patient_index]


def seed_average(per_seed: dict[int, np.ndarray], seeds: tuple[int, ...], seed_counts: np.ndarray) -> np.ndarray:
    """Per resample, the seed-draw-weighted mean of per-seed arrays (B, …) over the seeds present.

    A resample that drew none of the present seeds gives NaN.
    """
    present = [i for i, s in enumerate(seeds) if s in per_seed]
    stacked = np.stack([per_seed[seeds[i]] for i in present])  # (S', B, …)
    counts = seed_counts[:, present].T  # (S', B)
    shape = counts.shape + (1,) * (stacked.ndim - 2)
    total = counts.sum(axis=0).reshape(counts.shape[1:] + (1,) * (stacked.ndim - 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (stacked * counts.reshape(shape)).sum(axis=0) / total


def task_mean(per_task: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Mean over the eligible tasks (last axis), skipping NaN (a resample where a task is undefined)."""
    chosen = per_task[..., eligible]
    if chosen.shape[-1] == 0:
        return np.full(per_task.shape[:-1], np.nan)
    with warnings.catch_warnings():  # a resample where every eligible task is undefined: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(chosen, axis=-1)


def bootstrap_difference(observed: float, resampled: np.ndarray) -> Difference:
    """The observed difference with the 2.5–97.5 percentile interval of its resampled values and the
    two-sided bootstrap p = min(1, 2·(1 + #{resamples on the far side of 0}) / (B + 1)) — never 0."""
    d = np.asarray(resampled, float)
    d = d[np.isfinite(d)]
    if not np.isfinite(observed) or d.size == 0:
        return Difference.missing()
    low, high = np.percentile(d, [2.5, 97.5])
    tail = min(np.sum(d <= 0), np.sum(d >= 0))
    b = d.size
    return Difference(
        float(observed), float(low), float(high), float(min(1.0, 2 * (tail + 1) / (b + 1))), b, p_floor=2 / (b + 1)
    )


def bootstrap_interval(observed: float, resampled: np.ndarray) -> Difference:
    """The observed value with the 2.5–97.5 percentile interval of its resamples (no test: p NaN)."""
    d = np.asarray(resampled, float)
    d = d[np.isfinite(d)]
    if not np.isfinite(observed) or d.size == 0:
        return Difference(float(observed), float("nan"), float("nan"), float("nan"), int(d.size))
    low, high = np.percentile(d, [2.5, 97.5])
    return Difference(float(observed), float(low), float(high), float("nan"), int(d.size))


def delta_m(values: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> np.ndarray:
    """Δm% (Maninis et al., CVPR 2019; Navon et al., ICML 2022): 100 × the mean over tasks and metrics of
    the relative change (v − r) / r, on metrics where higher is better (here AUROC and AP).

    Arrays are (…, T) over the tasks to average (the caller drops ineligible ones); the mean is over
    the last axis and the metrics, per leading index (a resample); NaN terms are skipped.
    """
    terms = []
    for metric, v in values.items():
        ref = np.asarray(reference[metric], float)
        with np.errstate(invalid="ignore", divide="ignore"):
            terms.append((np.asarray(v, float) - ref) / np.abs(ref))
    joined = np.concatenate(terms, axis=-1)
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # no eligible task: NaN, said under the table
        warnings.simplefilter("ignore", RuntimeWarning)
        return 100 * np.nanmean(joined, axis=-1)


def log_ratio_interval(values: np.ndarray, reference: np.ndarray) -> Difference:
    """A cost ratio (geometric mean of per-seed values ÷ reference's) with a t-interval on the log scale
    over paired seeds; with one pair, the ratio without interval."""
    values, reference = np.asarray(values, float), np.asarray(reference, float)
    ok = np.isfinite(values) & np.isfinite(reference) & (values > 0) & (reference > 0)
    logs = np.log(values[ok]) - np.log(reference[ok])
    n = logs.size
    if n == 0:
        return Difference.missing()
    mean = float(np.exp(logs.mean()))
    if n < 2 or logs.std(ddof=1) == 0:
        return Difference(mean, float("nan") if n < 2 else mean, float("nan") if n < 2 else mean, float("nan"), n)
    half = stats.t.ppf(0.975, n - 1) * logs.std(ddof=1) / np.sqrt(n)
    return Difference(mean, float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half)), float("nan"), n)
