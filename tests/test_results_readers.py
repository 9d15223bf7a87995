"""Typed readers of the results database: the frames the report, summary and export read."""

import numpy as np
import pandas as pd
import pytest

from mtlbench.task_metrics import TaskMetrics
from mtlbench.results import readers
from mtlbench.results.leases import Owner
from mtlbench.results.store import ResultsStore, RunKey

TASKS = ("a", "b")


def _store_two_runs(path) -> tuple[int, int]:
    with ResultsStore(path) as s:
        done = s.claim_run(RunKey("ew", "toy", 0, "h0"), '{"seed": 0}', {}, "sum-to-T", Owner()).run_id
        s.add_metrics(
            done,
            "test",
            2,
            TASKS,
            TaskMetrics(np.array([0.5, 0.25]), np.array([0.9, 0.8]), np.array([0.7, 0.6]), np.array([0.6, 0.4])),
        )
        s.add_metrics(
            done,
            "val",
            1,
            TASKS,
            TaskMetrics(np.array([0.4, 0.3]), np.array([0.9, 0.8]), np.array([0.7, 0.6]), np.array([0.6, 0.4])),
        )
        s.add_weights(done, 1, [-1, 0], TASKS, np.array([[1.5, 0.5], [9.0, 9.0]]))
        s.set_costs(
            done, {"device": "cpu", "wall_s": 2.0, "median_step_s": 0.1, "peak_rss_mb": 10.0, "rss_scope": "run"}
        )
        s.finish_run(done, "complete", selected_epoch=2)
        running = s.claim_run(RunKey("dwa", "toy", 0, "h1"), "{}", {}, "sum-to-T", Owner()).run_id
    return done, running


def test_readers_return_the_stored_values(tmp_path):
    done, running = _store_two_runs(tmp_path / "r.sqlite")
    with ResultsStore(tmp_path / "r.sqlite") as s:
        runs = readers.finished_runs(s)
        assert runs["run_id"].tolist() == [done]  # the running one is not finished
        assert list(runs.columns) == list(readers.RUN_COLUMNS)
        test = readers.metrics_on_test(s, [done, running])
        assert test.sort_values("task")[["task", "auroc", "ap"]].values.tolist() == [["a", 0.7, 0.6], ["b", 0.6, 0.4]]
        curves = readers.epoch_losses(s, [done])
        assert curves[["split", "epoch", "task", "loss"]].values.tolist() == [
            ["val", 1, "a", 0.4],
            ["val", 1, "b", 0.3],
        ]
        weights = readers.epoch_weights(s, [done])  # the epoch means only (step −1), not step rows
        assert weights.sort_values("task")["weight"].tolist() == [1.5, 0.5]
        assert readers.run_costs(s, [done])["wall_s"].tolist() == [2.0]
        summary = readers.run_summaries(s, [done, running]).set_index("run_id")
        assert summary.loc[done, "auroc"] == pytest.approx(0.65)
        assert summary.loc[done, "accuracy"] == pytest.approx(0.85)
        assert summary.loc[running, "status"] == "running" and pd.isna(summary.loc[running, "wall_s"])


def test_an_empty_selection_has_the_named_columns(tmp_path):
    _store_two_runs(tmp_path / "r.sqlite")
    with ResultsStore(tmp_path / "r.sqlite") as s:
        empty = readers.metrics_on_test(s, [])
        assert empty.empty and list(empty.columns) == ["run_id", "task", "loss", "accuracy", "auroc", "ap"]


def test_whole_table_reads_known_tables_only(tmp_path):
    done, _ = _store_two_runs(tmp_path / "r.sqlite")
    with ResultsStore(tmp_path / "r.sqlite") as s:
        assert readers.whole_table(s, "weights")["weight"].tolist() == [1.5, 0.5, 9.0, 9.0]
        with pytest.raises(ValueError, match="no table"):
            readers.whole_table(s, "runs; DROP TABLE runs")
