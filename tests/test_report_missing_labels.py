"""The report on a dataset with missing labels: each task scored on its labelled test images, equal to
scikit-learn on those images, and the table says how many each task has."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mtlbench.report.leaderboard import leaderboard
from mtlbench.report.load import load_protocols
from mtlbench.report.table import per_task_table, table_notes
from mtlbench.results.store import ResultsStore
from mtlbench.tasks import TASK_NAMES
from mtlbench.training import train_run
from tests.conftest import make_bundle
from tests.test_train import CFG, with_missing_labels
from tests.tiny_model import tiny_model


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    path = tmp_path_factory.mktemp("missing") / "r.sqlite"
    data = with_missing_labels(make_bundle(), fraction=0.3)
    with ResultsStore(path) as store:
        for method in ("ew", "dwa"):
            train_run(replace(CFG, method=method), data, store, {"torch": torch.__version__}, model_factory=tiny_model)
    return path, data


def test_per_task_auroc_is_sklearn_on_labelled_images_and_headers_count_them(results) -> None:
    path, data = results
    protocol = load_protocols(path)[0]
    board = leaderboard(protocol, "ew", resamples=50, min_positives=1)
    labels = data.test.labels
    assert board.labelled is not None
    assert board.labelled.tolist() == (~np.isnan(labels)).sum(axis=0).tolist()
    assert board.labelled[13] == 0 and not board.eligible[13]  # a task without labels is in no mean
    ew_run = int(protocol.complete().query("variant == 'ew'")["run_id"].iloc[0])
    _, _, probs = protocol.predictions[(ew_run, "test")]
    observed = board.per_task.query("variant == 'ew' and metric == 'auroc'").set_index("task")["value"]
    for t, task in enumerate(TASK_NAMES[:13]):
        rows = ~np.isnan(labels[:, t])
        if 0 < labels[rows, t].sum() < rows.sum():
            assert observed[task] == pytest.approx(roc_auc_score(labels[rows, t], probs[rows, t]))
    assert np.isnan(observed[TASK_NAMES[13]])
    headers = per_task_table(board).columns
    positives = int(np.nansum(labels[:, 0]))
    assert any(h.startswith(f"{TASK_NAMES[0]} ({positives} of {int(board.labelled[0])}") for h in headers)
    assert any("labelled test images only" in note for note in table_notes(board))
