"""The report's statistics against scipy / scikit-learn on known inputs, and their closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from mtlbench.report.figures import pareto_front
from mtlbench.report.leaderboard import choose_thresholds
from mtlbench.report.stats import delta_m, mean_auroc_resampled, paired_bootstrap, paired_t, weighted_auroc


def test_paired_t_matches_scipy() -> None:
    a = np.array([0.71, 0.69, 0.74, 0.70, 0.72])
    b = np.array([0.68, 0.69, 0.70, 0.66, 0.70])
    d = paired_t(a, b)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert d.n == 5 and d.mean == pytest.approx((a - b).mean())
    assert d.p == pytest.approx(ref.pvalue) and (d.low, d.high) == pytest.approx((ci.low, ci.high))


def test_paired_t_degenerate_cases() -> None:
    assert np.isnan(paired_t([0.7], [0.6]).mean)  # one pair: no test
    same = paired_t([1.0, 2.0], [0.5, 1.5])  # constant difference: no spread
    assert (same.mean, same.low, same.high, same.p) == (0.5, 0.5, 0.5, 0.0)


def test_weighted_auroc_equals_sklearn_with_ties_and_weights() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # many ties
    counts = rng.multinomial(300, np.full(300, 1 / 300), size=4).astype(float)
    got = weighted_auroc(labels, scores, np.vstack([np.ones(300), counts]))
    assert got[0] == pytest.approx(roc_auc_score(labels, scores))
    for row, w in zip(got[1:], counts):
        assert row == pytest.approx(roc_auc_score(labels, scores, sample_weight=w))
    assert np.isnan(weighted_auroc(np.zeros(5, bool), np.arange(5.0), np.ones((1, 5))))[0]


def test_bootstrap_of_identical_methods_is_zero_and_of_a_better_one_excludes_zero() -> None:
    rng = np.random.default_rng(1)
    labels = (rng.random((400, 3)) < 0.3).astype(np.uint8)
    weak = np.clip(labels * 0.2 + rng.random((400, 3)) * 0.8, 0, 1)
    strong = np.clip(labels * 0.6 + rng.random((400, 3)) * 0.4, 0, 1)
    same = paired_bootstrap(labels, [weak], [weak], resamples=200)
    assert (same.mean, same.low, same.high, same.p) == (0.0, 0.0, 0.0, 1.0)
    better = paired_bootstrap(labels, [strong, strong], [weak, weak], resamples=300)
    observed = mean_auroc_resampled(labels, strong, np.ones((1, 400)))[0] - \
        np.mean([roc_auc_score(labels[:, t], weak[:, t]) for t in range(3)])
    assert better.mean == pytest.approx(observed) and better.low > 0 and better.p < 0.01 and better.n == 2


def test_delta_m_closed_form() -> None:
    values = {"auroc": np.array([0.8, 0.6]), "loss": np.array([0.9, 1.1])}
    reference = {"auroc": np.array([0.5, 0.6]), "loss": np.array([1.0, 1.0])}
    # AUROC: +60%, 0%; loss (lower better): +10%, -10%  → mean 15%
    assert delta_m(values, reference, {"loss"}) == pytest.approx(15.0)
    assert delta_m(reference, reference, {"loss"}) == 0.0


def test_pareto_front() -> None:
    points = [(1.0, 0.6), (2.0, 0.7), (3.0, 0.65), (0.5, 0.5), (2.0, 0.69), (4.0, 0.8)]
    assert pareto_front(points) == [(0.5, 0.5), (1.0, 0.6), (2.0, 0.7), (4.0, 0.8)]


def test_thresholds_chosen_on_validation() -> None:
    labels = np.array([0, 0, 0, 1, 1, 0, 1, 1])
    probs = np.array([0.1, 0.2, 0.3, 0.35, 0.6, 0.4, 0.7, 0.9])
    f1_at, youden_at = choose_thresholds(labels, probs)
    assert f1_at == pytest.approx(0.35)  # F1 0.889 there; 0.857 at 0.6
    assert youden_at in (pytest.approx(0.35), pytest.approx(0.6))  # J = 0.75 at both
    assert choose_thresholds(np.zeros(4, int), np.arange(4) / 4) == (0.5, 0.5)
