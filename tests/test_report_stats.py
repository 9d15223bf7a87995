"""The report's statistics against scipy / scikit-learn on known inputs, and their closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from mtlbench.report.figures import pareto_front
from mtlbench.report.leaderboard import patient_of, shared_seeds, significantly_best
from mtlbench.report.resampled import VariantMetrics, choose_thresholds, run_metrics
from mtlbench.report.stats import (
    Resampling,
    bootstrap_difference,
    delta_m,
    eligible_tasks,
    holm,
    log_ratio_interval,
    paired_t,
    seed_average,
    task_mean,
)


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
    same = paired_t([1.0, 2.0], [0.5, 1.5])  # constant difference: no spread, so no test (not p = 0)
    assert (same.mean, same.low, same.high) == (0.5, 0.5, 0.5) and np.isnan(same.p)


def test_holm_closed_form_and_nan() -> None:
    # sorted p: 0.01, 0.02, 0.04 (m = 3) → 0.03, 0.04, 0.04 (monotone), NaN untouched
    got = holm(np.array([0.04, np.nan, 0.01, 0.02]))
    assert got[[0, 2, 3]] == pytest.approx([0.04, 0.03, 0.04]) and np.isnan(got[1])
    assert holm(np.array([0.5, 0.9])) == pytest.approx([1.0, 1.0])  # capped at 1
    assert np.isnan(holm(np.array([np.nan]))).all()


def test_bootstrap_p_is_never_zero_and_is_one_when_centred() -> None:
    far = bootstrap_difference(0.1, np.full(999, 0.1))
    assert far.p == pytest.approx(2 / 1000) and far.p == far.p_floor and (far.low, far.high) == (0.1, 0.1)
    centred = bootstrap_difference(0.0, np.r_[-np.ones(500), np.ones(500)])
    assert centred.p == 1.0


def test_eligible_tasks() -> None:
    labels = np.zeros((30, 3), int)
    labels[:20, 0] = 1
    labels[:19, 1] = 1
    labels[:, 2] = 1  # no negative: AUROC undefined
    assert eligible_tasks(labels, 20).tolist() == [True, False, False]


def test_patients_are_resampled_whole() -> None:
    patients = np.array(["a", "a", "a", "b", "c", "c"])
    design = Resampling.of(patients, (0,), resamples=250)
    weights = np.concatenate(list(design.weights_chunks()))
    assert weights.shape == (250, 6) and design.patients == 3
    # an image's weight is its patient's draw count: equal within a patient, K draws per resample
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 4] == weights[:, 5]).all()
    assert (weights[:, [0, 3, 4]].sum(axis=1) == 3).all()
    assert np.array_equal(weights, np.concatenate(list(design.weights_chunks())))  # the same draws every call


def test_seed_average_weights_seeds_by_their_draws() -> None:
    per_seed = {0: np.array([[1.0], [1.0]]), 1: np.array([[3.0], [3.0]])}
    counts = np.array([[2.0, 0.0], [1.0, 1.0]])
    assert seed_average(per_seed, (0, 1), counts)[:, 0].tolist() == [1.0, 2.0]
    # a variant missing seed 1: only the draws of seed 0 count; none drawn → NaN
    only = seed_average({0: per_seed[0]}, (0, 1), np.array([[0.0, 2.0], [1.0, 1.0]]))
    assert np.isnan(only[0, 0]) and only[1, 0] == 1.0


def test_delta_m_closed_form() -> None:
    values = {"auroc": np.array([0.8, 0.6]), "ap": np.array([0.2, 0.1])}
    reference = {"auroc": np.array([0.5, 0.6]), "ap": np.array([0.1, 0.1])}
    # AUROC: +60%, 0%; AP: +100%, 0% → mean 40%
    assert delta_m(values, reference) == pytest.approx(40.0)
    assert delta_m(reference, reference) == 0.0


def test_log_ratio_interval() -> None:
    r = log_ratio_interval(np.array([2.0, 8.0]), np.array([1.0, 2.0]))  # ratios 2 and 4: geometric mean √8
    assert r.mean == pytest.approx(np.sqrt(8)) and r.low < np.sqrt(8) < r.high
    logs = np.log([2.0, 4.0])
    half = stats.t.ppf(0.975, 1) * logs.std(ddof=1) / np.sqrt(2)
    assert (r.low, r.high) == pytest.approx((np.exp(logs.mean() - half), np.exp(logs.mean() + half)))
    assert np.isnan(log_ratio_interval(np.array([2.0]), np.array([1.0])).low)


def _variant(labels, probs_by_seed, design):
    eligible = eligible_tasks(labels, 5)
    return VariantMetrics({s: run_metrics(labels, p, None, design) for s, p in probs_by_seed.items()}, design, eligible)


def test_a_better_method_is_significantly_best_and_identical_ones_are_not() -> None:
    rng = np.random.default_rng(1)
    n = 300
    labels = (rng.random((n, 3)) < 0.3).astype(np.uint8)
    weak = np.clip(labels * 0.2 + rng.random((n, 3)) * 0.8, 0, 1)
    strong = np.clip(labels * 0.6 + rng.random((n, 3)) * 0.4, 0, 1)
    design = Resampling.of(np.arange(n) // 2, (0, 1), resamples=300)
    a, b = _variant(labels, {0: strong, 1: strong}, design), _variant(labels, {0: weak, 1: weak}, design)
    observed, resampled = a.statistic("auroc")
    assert observed == pytest.approx(np.mean([roc_auc_score(labels[:, t], strong[:, t]) for t in range(3)]))
    assert significantly_best({"a": a.statistic("auroc"), "b": b.statistic("auroc")}, True) == "a"
    assert significantly_best({"a": b.statistic("auroc"), "b": b.statistic("auroc")}, True) is None
    assert significantly_best({"a": a.statistic("ece"), "b": b.statistic("ece")}, False) in ("a", "b", None)
    assert task_mean(np.array([[0.5, np.nan, 0.7]]), np.array([True, True, False]))[0] == 0.5


def test_significance_uses_the_pairing_it_is_given() -> None:
    """The leaderboard pairs two variants on the seeds both have: significantly_best then tests best − other as the
    pairing returns it, not the candidates' own values (which may average different seeds)."""
    own = {"a": (0.9, np.full(200, 0.9)), "b": (0.7, np.full(200, 0.7)), "c": (0.6, np.full(200, 0.6))}
    assert significantly_best(own, True) == "a"
    asked = []

    def level(best: str, other: str) -> tuple[float, np.ndarray]:  # on shared seeds: no difference at all
        asked.append((best, other))
        return 0.0, np.linspace(-0.05, 0.05, 200)

    assert significantly_best(own, True, level) is None
    assert asked == [("a", "b"), ("a", "c")]
    assert significantly_best(own, True, lambda x, y: (0.1, np.full(200, 0.1))) == "a"
    assert significantly_best(own, False, lambda x, y: (-0.1, np.full(200, -0.1))) == "c"  # lower is better


def test_shared_seeds_are_those_every_variant_completed() -> None:
    rng = np.random.default_rng(3)
    labels = (rng.random((40, 2)) < 0.5).astype(np.uint8)
    design = Resampling.of(np.arange(40), (0, 1, 2), resamples=10)
    probs = rng.random((40, 2))
    a = _variant(labels, {0: probs, 2: probs}, design)
    b = _variant(labels, {0: probs, 1: probs, 2: probs}, design)
    c = _variant(labels, {1: probs}, design)
    assert shared_seeds(a, b) == [0, 2] and shared_seeds(a, b, c) == [] and shared_seeds(b) == [0, 1, 2]


def test_patient_of_nih_names() -> None:
    assert patient_of("00000013_005.png") == "00000013"
    assert patient_of("img_7.png") == "img_7.png"  # not an NIH name: its own cluster


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


def test_the_paper_checks_comparator_is_chosen_on_validation_not_test() -> None:
    """A method best on test but not on validation is not the comparator; one without validation predictions
    cannot be."""
    import pandas as pd

    from mtlbench.report.paper_check import comparator

    runs = pd.DataFrame(
        {
            "variant": ["pcgrad", "pcgrad", "mgda", "mgda", "ew", "dwa"],
            "accuracy": [0.99, 0.99, 0.90, 0.90, 0.80, 0.995],  # test: dwa, then pcgrad, best
            "val_accuracy": [0.80, 0.82, 0.85, 0.86, 0.70, float("nan")],  # validation: mgda best
        }
    )
    assert comparator(runs, ["pcgrad", "mgda", "ew", "dwa"]) == "mgda"
    assert comparator(runs, ["dwa"]) is None
