"""Per-task metrics agree with scikit-learn and are NaN where undefined."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mtlbench.task_metrics import task_metrics


def test_metrics_per_task():
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    probs = np.array([[0.9, 0.2], [0.4, 0.7], [0.3, 0.1], [0.2, 0.4]])
    m = task_metrics(labels, probs, np.array([0.1, 0.2]))
    assert m.auroc[0] == pytest.approx(roc_auc_score(labels[:, 0], probs[:, 0]))
    assert np.isnan(m.auroc[1]) and np.isnan(m.ap[1])  # one class only
    assert m.accuracy.tolist() == [0.75, 0.75]  # p > 0.5 is positive
    assert m.mean()["auroc"] == pytest.approx(m.auroc[0])  # mean ignores undefined tasks


def test_missing_labels_are_left_out_per_task() -> None:
    labels = np.array([[1, 0], [0, np.nan], [1, 1], [np.nan, 0], [0, np.nan]], dtype=np.float32)
    probs = np.array([[0.9, 0.2], [0.3, 0.9], [0.4, 0.8], [0.9, 0.1], [0.2, 0.7]])
    m = task_metrics(labels, probs, np.array([0.5, np.nan]))
    rows0, rows1 = [0, 1, 2, 4], [0, 2, 3]
    assert m.accuracy[0] == pytest.approx(3 / 4) and m.accuracy[1] == pytest.approx(1.0)
    assert m.auroc[0] == pytest.approx(roc_auc_score(labels[rows0, 0], probs[rows0, 0]))
    assert m.auroc[1] == pytest.approx(roc_auc_score(labels[rows1, 1], probs[rows1, 1]))
    none = task_metrics(np.full((3, 1), np.nan, np.float32), np.full((3, 1), 0.5), np.array([np.nan]))
    assert np.isnan(none.accuracy[0]) and np.isnan(none.auroc[0])
