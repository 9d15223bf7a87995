"""Where a run's results go: the results database, in transactions that hold only while the run is ours.

The training loop writes through `RunSink` and never sees SQL; `StoreSink` is the one the CLI
uses, a test may pass its own. `Sinks` composes several (the database and `--tensorboard`'s view).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mtlbench.results.leases import Owner
from mtlbench.datasets.base import Split
from mtlbench.task_metrics import TaskMetrics
from mtlbench.results.store import ResultsStore


@dataclass(frozen=True)
class EpochRecord:
    """What one finished epoch stores: training statistics, weights, validation metrics."""

    epoch: int
    train_loss: np.ndarray  # (T,)
    train_accuracy: np.ndarray  # (T,)
    mean_weights: np.ndarray | None  # (T,): the weights in force over the epoch; None without weights
    step_weights: tuple[list[int], np.ndarray] | None  # (global steps, (S, T) weights) when logged per step
    val: TaskMetrics
    median_step_s: float = float("nan")  # the median training step of the epoch, in seconds


@dataclass(frozen=True)
class CompletedRun:
    """What a finished run stores: test metrics at the selected epoch, both splits' predictions, costs."""

    selected_epoch: int
    test: TaskMetrics
    val_split: Split
    val_probs: np.ndarray  # (n_val, T) at the selected epoch
    test_split: Split
    test_probs: np.ndarray  # (n_test, T)
    costs: dict[str, Any]
    diagnostics: dict[str, float]
    cross_tests: dict[str, tuple[TaskMetrics, Split]] = field(default_factory=dict)  # `--test-dataset`, by name


class RunSink(Protocol):
    """The three moments a run's results are stored."""

    def epoch(self, record: EpochRecord) -> None: ...
    def diverged(self, step: int, diagnostics: dict[str, float]) -> None: ...
    def complete(self, result: CompletedRun) -> None: ...


@dataclass(frozen=True)
class Sinks:
    """A RunSink that passes each moment to several sinks, in order: the results database first, so that
    an extra view never holds what the database does not."""

    sinks: tuple[RunSink, ...]

    def epoch(self, record: EpochRecord) -> None:
        """Each sink's epoch."""
        for sink in self.sinks:
            sink.epoch(record)

    def diverged(self, step: int, diagnostics: dict[str, float]) -> None:
        """Each sink's divergence."""
        for sink in self.sinks:
            sink.diverged(step, diagnostics)

    def complete(self, result: CompletedRun) -> None:
        """Each sink's result."""
        for sink in self.sinks:
            sink.complete(result)


@dataclass
class StoreSink:
    """A RunSink writing run `run_id` of `store`, each write checked to be `owner`'s still."""

    store: ResultsStore
    run_id: int
    owner: Owner
    tasks: tuple[str, ...]

    def epoch(self, record: EpochRecord) -> None:
        """An epoch's rows land together, while the run is still ours."""
        s, rid = self.store, self.run_id
        with s.transaction(immediate=True):
            s.assert_owner(rid, self.owner)
            s.add_train_stats(rid, record.epoch, self.tasks, record.train_loss, record.train_accuracy)
            if record.mean_weights is not None:  # an aggregator without task weights logs none
                s.add_weights(rid, record.epoch, [-1], self.tasks, record.mean_weights[None])
            if record.step_weights is not None:
                steps, weights = record.step_weights
                s.add_weights(rid, record.epoch, steps, self.tasks, weights)
            s.add_metrics(rid, "val", record.epoch, self.tasks, record.val)

    def diverged(self, step: int, diagnostics: dict[str, float]) -> None:
        """The run ends as diverged at `step`."""
        s, rid = self.store, self.run_id
        with s.transaction(immediate=True):
            s.assert_owner(rid, self.owner)
            s.set_diagnostics(rid, diagnostics)
            s.finish_run(rid, "diverged", diverged_step=step, error="non-finite loss")

    def complete(self, result: CompletedRun) -> None:
        """The result lands whole or not at all."""
        s, rid = self.store, self.run_id
        with s.transaction(immediate=True):
            s.assert_owner(rid, self.owner)
            epoch = result.selected_epoch
            s.add_metrics(rid, "test", epoch, self.tasks, result.test)
            for name, split, probs in (
                ("val", result.val_split, result.val_probs),
                ("test", result.test_split, result.test_probs),
            ):
                s.add_predictions(rid, name, epoch, split.image_ids, split.labels, probs, split.patient_ids)
            for dataset, (metrics, split) in result.cross_tests.items():
                s.add_cross_test(rid, dataset, self.tasks, metrics, split.labels)
            s.set_costs(rid, result.costs)
            s.set_diagnostics(rid, result.diagnostics)
            s.finish_run(rid, "complete", selected_epoch=epoch)
