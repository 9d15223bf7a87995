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
