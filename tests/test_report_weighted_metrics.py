"""Weighted per-task metrics for bootstrap resamples: each equals sklearn's with sample_weight, or its
closed form (ECE)."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, balanced_accuracy_score, f1_score, roc_auc_score

from mtlbench.report import weighted_metrics as wm


def _data(n=200, t=3, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, t)) < [0.1, 0.3, 0.5][:t]).astype(np.uint8)
    probs = np.clip(0.3 * labels + rng.random((n, t)) * 0.7, 0, 1)
    if ties:
        probs = np.round(probs, 1)  # many tied scores
    weights = rng.multinomial(n, np.full(n, 1 / n), size=5).astype(float)
    return labels, probs, weights


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_and_ap_equal_sklearn_with_sample_weights(ties):
    labels, probs, weights = _data(ties=ties)
    for t in range(labels.shape[1]):
        auroc = wm.weighted_auroc(labels[:, t], probs[:, t], weights)
        ap = wm.weighted_average_precision(labels[:, t], probs[:, t], weights)
        for b, w in enumerate(weights):
            assert auroc[b] == pytest.approx(roc_auc_score(labels[:, t], probs[:, t], sample_weight=w), abs=1e-12)
            assert ap[b] == pytest.approx(
                average_precision_score(labels[:, t], probs[:, t], sample_weight=w), abs=1e-12
            )


def test_one_class_gives_nan():
    labels = np.zeros(10, np.uint8)
    scores = np.linspace(0, 1, 10)
    assert np.isnan(wm.weighted_auroc(labels, scores, np.ones((1, 10)))).all()
    assert np.isnan(wm.weighted_average_precision(labels, scores, np.ones((1, 10)))).all()


def test_threshold_metrics_equal_sklearn():
    labels, probs, weights = _data()
    predicted = probs >= np.array([0.4, 0.5, 0.6])
    counts = wm.confusion(labels, predicted, weights)
    acc, f1, bal = wm.accuracy(counts), wm.f1(counts), wm.balanced_accuracy(counts)
    for b, w in enumerate(weights):
        for t in range(labels.shape[1]):
            y, p = labels[:, t], predicted[:, t]
            assert acc[b, t] == pytest.approx(accuracy_score(y, p, sample_weight=w))
            assert f1[b, t] == pytest.approx(f1_score(y, p, sample_weight=w, zero_division=0))
            assert bal[b, t] == pytest.approx(balanced_accuracy_score(y, p, sample_weight=w))


def test_ece_closed_forms():
    ones = np.ones((1, 4))
    # always wrong with full confidence: ECE 1
    assert wm.expected_calibration_error(np.zeros((4, 1)), np.ones((4, 1)), ones)[0, 0] == pytest.approx(1.0)
    # every bin's mean probability equals its label frequency: ECE 0
    labels = np.array([[0], [1], [0], [1]])
    probs = np.full((4, 1), 0.55)  # one bin, frequency 0.5, mean probability 0.55
    assert wm.expected_calibration_error(labels, probs, ones)[0, 0] == pytest.approx(0.05)
    assert wm.expected_calibration_error(labels, np.full((4, 1), 0.5), ones)[0, 0] == pytest.approx(0.0)
    # two bins: (2/4)|0 − 0.1| + (2/4)|1 − 0.9| = 0.1; weights count images
    labels, probs = np.array([[0], [0], [1], [1]]), np.array([[0.1], [0.1], [0.9], [0.9]])
    assert wm.expected_calibration_error(labels, probs, ones)[0, 0] == pytest.approx(0.1)
    weighted = wm.expected_calibration_error(labels, np.array([[0.1], [0.3], [0.9], [0.9]]), np.array([[3, 1, 0, 0.0]]))
    # all weight in bin 1 (0.1, 3×) and bin 3 (0.3, 1×): (3·0.1 + 1·0.3) / 4
    assert weighted[0, 0] == pytest.approx(0.15)


def test_reliability_curve_bins():
    mean_p, freq, count = wm.reliability_curve(np.array([0, 1, 1, 0]), np.array([0.05, 0.15, 0.95, 1.0]))
    assert count.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert mean_p[9] == pytest.approx(0.975) and freq[9] == pytest.approx(0.5) and np.isnan(freq[2])
