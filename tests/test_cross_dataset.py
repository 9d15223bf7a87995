"""`--test-dataset`: the selected model also scored on another dataset's test split, stored with the run and
shown in the report's cross-dataset table."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mtlbench.config import build_config
from mtlbench.errors import UserError
from mtlbench.report.generalization import generalization_table
from mtlbench.report.leaderboard import leaderboard
from mtlbench.report.load import load_protocols
from mtlbench.results.store import ResultsStore
from mtlbench.training import train_run
from tests.conftest import make_bundle
from tests.test_train import CFG, with_missing_labels
from tests.tiny_model import tiny_model


def test_cross_test_is_stored_per_task_and_tabled(tmp_path) -> None:
    own = make_bundle()
    other = with_missing_labels(make_bundle(n_train=32), fraction=0.2, seed=3).test
    data = replace(own, cross_tests={"elsewhere": other})
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        for seed in (0, 1):
            train_run(replace(CFG, seed=seed), data, store, {"torch": torch.__version__}, model_factory=tiny_model)
        rows = store.query("SELECT * FROM cross_tests WHERE run_id=1 ORDER BY rowid")
    assert len(rows) == 14 and {r["dataset"] for r in rows} == {"elsewhere"}
    labelled = (~np.isnan(other.labels)).sum(axis=0)
    assert [r["images"] for r in rows] == labelled.tolist()
    assert [r["positives"] for r in rows] == np.nansum(other.labels, axis=0).astype(int).tolist()
    assert rows[13]["auroc"] is None and rows[0]["auroc"] is not None  # task 13 is never labelled there
    protocol = load_protocols(path)[0]
    board = leaderboard(protocol, "ew", resamples=20, min_positives=1)
    table = generalization_table(protocol, board)
    assert len(table) == 1 and table.loc[0, "tested on"] == "elsewhere" and table.loc[0, "seeds"] == 2
    assert 0 < table.loc[0, "tasks"] <= 13 and "±" in table.loc[0, "other test AUROC"]


def test_without_a_cross_test_there_is_no_table(tmp_path) -> None:
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        train_run(CFG, make_bundle(), store, {"torch": torch.__version__}, model_factory=tiny_model)
    protocol = load_protocols(path)[0]
    assert generalization_table(protocol, leaderboard(protocol, "ew", resamples=20, min_positives=1)).empty


def test_test_dataset_is_part_of_the_identity_and_its_folder_is_not() -> None:
    base = build_config("smoke")
    crossed = replace(base, test_dataset="chexpert-synth")
    assert crossed.config_hash() != base.config_hash() and "test_dataset" not in base.hashed_fields()
    assert replace(crossed, test_data_dir="/elsewhere").config_hash() == crossed.config_hash()
    with pytest.raises(UserError, match="give --test-dataset NAME too"):
        build_config("smoke", [({"test_data_dir": "/x"}, "command line")])


def test_the_table_says_when_no_task_can_be_compared(tmp_path) -> None:
    data = replace(make_bundle(), cross_tests={"elsewhere": make_bundle(n_train=32).test})
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        train_run(CFG, data, store, {"torch": torch.__version__}, model_factory=tiny_model)
    protocol = load_protocols(path)[0]
    table = generalization_table(protocol, leaderboard(protocol, "ew", resamples=20, min_positives=10_000))
    assert len(table) == 1 and table.loc[0, "tasks"] == 0 and table.loc[0, "change"] == "—"
