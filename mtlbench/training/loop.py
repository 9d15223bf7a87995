"""The epoch loop of one run: training steps, the epoch's statistics, model selection, checkpoints, the test.

It stores results through a RunSink (no SQL here) and reports progress to a RunReporter.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from mtlbench import checkpoint, costs, machine_load
from mtlbench.config import RunConfig
from mtlbench.datasets.base import DatasetBundle, Split
from mtlbench.losses import build_task_loss
from mtlbench.batches import DeviceSplit
from mtlbench.methods.base import EpochStats
from mtlbench.task_metrics import TaskMetrics
from mtlbench.training.evaluation import evaluate
from mtlbench.training.sink import CompletedRun, EpochRecord, RunSink
from mtlbench.training.state import LoopState, RunParts, checkpoint_payload
from mtlbench.training.step import epoch_batches, training_step

DIVERGENCE_CHECK_EVERY = 20  # steps between host syncs that look for a non-finite loss


class RunReporter(Protocol):
    """Where the trainer reports progress (a rich display in the CLI, nothing in tests)."""

    def start_run(self, label: str, epochs: int, steps: int, first_epoch: int = 0) -> None: ...
    def advance_step(self) -> None: ...
    def end_epoch(self, epoch: int, val_auroc: float) -> None: ...
    def end_run(self) -> None: ...


@dataclass
class EpochMeter:
    """On-device running sums of one training epoch (no host sync per step)."""

    num_tasks: int
    device: torch.device
    loss_sum: torch.Tensor = field(init=False)
    correct: torch.Tensor = field(init=False)
    weight_sum: torch.Tensor = field(init=False)
    labelled: torch.Tensor = field(init=False)  # (T,) images with a label per task
    unlabelled_steps: torch.Tensor = field(init=False)  # (T,) steps whose batch had no label for the task
    step_weights: list[torch.Tensor] = field(default_factory=list)
    seen: int = 0
    steps: int = 0
    weighted_steps: int = 0  # steps whose method returned task weights
    median_step_s: float = float("nan")  # of the epoch's steps, read from the step timer when the epoch ends

    def __post_init__(self) -> None:
        z = lambda: torch.zeros(self.num_tasks, device=self.device, dtype=torch.float64)  # noqa: E731
        self.loss_sum, self.correct, self.weight_sum = z(), z(), z()
        self.labelled, self.unlabelled_steps = z(), z()

    def add(
        self,
        losses: torch.Tensor,
        correct: torch.Tensor,
        batch: int,
        weights: torch.Tensor | None,
        keep_step: bool,
        labelled: torch.Tensor | None = None,
    ) -> None:
        """Accumulate one step's per-task losses, correct predictions and weights (if the method gave any);
        `labelled` (T,) the batch's labelled images per task where labels can be missing."""
        if labelled is None:
            self.loss_sum += losses.detach().double() * batch
            self.labelled += batch
        else:
            self.loss_sum += losses.detach().double() * labelled
            self.labelled += labelled
            self.unlabelled_steps += labelled == 0
        self.correct += correct.double()
        if weights is not None:
            w = weights.detach().double()
            self.weight_sum += w
            self.weighted_steps += 1
            if keep_step:
                self.step_weights.append(w)
        self.seen += batch
        self.steps += 1

    def train_means(self) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's per-task mean training loss and accuracy over the images labelled for each task
        (NaN for a task that had none)."""
        if not bool((self.labelled < self.seen).any()):  # every image labelled: the sums divide by `seen`
            return (self.loss_sum / self.seen).cpu().numpy(), (self.correct / self.seen).cpu().numpy()
        n = torch.where(self.labelled > 0, self.labelled, torch.full_like(self.labelled, float("nan")))
        return (self.loss_sum / n).cpu().numpy(), (self.correct / n).cpu().numpy()


@dataclass
class RunLoop:
    """One run's loop: its parts, data on the device, where results and progress go."""

    config: RunConfig
    data: DatasetBundle
    parts: RunParts
    state: LoopState
    sink: RunSink
    reporter: RunReporter
    ckpt_path: Path
    run_id: int
    t_start: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        device = self.parts.device
        self.train_split = DeviceSplit.from_split(self.data.train, device)
        self.val_split = DeviceSplit.from_split(self.data.val, device)
        self.test_split = DeviceSplit.from_split(self.data.test, device)
        self.timer = costs.StepTimer(device)
        self.load = machine_load.LoadMeter()
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)  # first non-finite step, on the device
        self.per_step_weights = self.parts.method.weights_changed_per_step()
        self.parts.method.bind_training_labels(torch.from_numpy(self.data.train.labels))
        self.task_loss = build_task_loss(
            self.config.loss, self.config.head, self.data.train.labels, self.data.has_missing_labels
        ).to(device)

    def run(self) -> int | None:
        """Train the remaining epochs; the step of a non-finite loss (then the run is over), else None."""
        for epoch in range(self.state.epoch, self.config.epochs):
            meter = self.train_epoch(epoch)
            diverged_at = first_bad_step(self.bad_step)
            if diverged_at is not None:
                self.sink.diverged(diverged_at, self.diagnostics())
                return diverged_at
            self.close_epoch(epoch, meter)
        return None

    def train_epoch(self, epoch: int) -> EpochMeter:
        """The training steps of `epoch` (stopping early, at a check interval, after a non-finite loss)."""
        config, parts, state, device = self.config, self.parts, self.state, self.parts.device
        parts.model.train()
        meter = EpochMeter(len(self.data.task_names), device)
        t_epoch = costs.now(device)
        self.load.start()
        for x, y in epoch_batches(self.train_split, config, epoch, device):
            self.timer.start()
            rec = training_step(
                parts.model,
                parts.method,
                parts.optimizer,
                x,
                y,
                config,
                state.global_step,
                epoch,
                device,
                self.timer,
                self.task_loss,
            )
            parts.schedule.step()
            bad = ~torch.isfinite(rec.losses).all()
            self.bad_step = torch.where(
                bad & (self.bad_step < 0), torch.full_like(self.bad_step, state.global_step), self.bad_step
            )
            meter.add(rec.losses, rec.correct, y.shape[0], rec.weights, self.per_step_weights, rec.labelled)
            self.timer.end()
            state.global_step += 1
            self.reporter.advance_step()
            if state.global_step % DIVERGENCE_CHECK_EVERY == 0 and first_bad_step(self.bad_step) is not None:
                break
        state.train_s += costs.now(device) - t_epoch
        others_s, capacity_s = self.load.stop()
        state.other_cpu_s += others_s
        state.capacity_s += capacity_s
        times = self.timer.collect()
        meter.median_step_s = statistics.median(times.steps) if times.steps else float("nan")
        state.step_times += times.steps
        state.method_times += times.method
        state.step_cpu_times += times.cpu
        return meter

    def close_epoch(self, epoch: int, meter: EpochMeter) -> None:
        """Validate, store the epoch, select the model, tell the method, and checkpoint."""
        config, parts, state, device = self.config, self.parts, self.state, self.parts.device
        train_loss, train_acc = meter.train_means()
        state.unlabelled_task_steps += int(meter.unlabelled_steps.sum().item())
        t_eval = costs.now(device)
        val, val_probs = evaluate(parts.model, self.val_split, config, device, self.task_loss)
        state.eval_s += costs.now(device) - t_eval
        self.sink.epoch(EpochRecord(epoch, train_loss, train_acc, *self.weights_of(meter), val, meter.median_step_s))
        val_auroc = val.mean()["auroc"]
        self.reporter.end_epoch(epoch, val_auroc)
        self.select(epoch, val, val_probs)
        parts.method.end_epoch(
            EpochStats(
                epoch=epoch,
                train_loss=torch.from_numpy(train_loss),
                train_accuracy=torch.from_numpy(train_acc),
                val_loss=torch.from_numpy(val.loss),
                val_accuracy=torch.from_numpy(val.accuracy),
                val_auroc=torch.from_numpy(val.auroc),
                labelled=meter.labelled.cpu() if self.data.has_missing_labels else None,
            )
        )
        state.epoch = epoch + 1
        if state.epoch < config.epochs:  # after the last epoch only the test remains: no checkpoint
            checkpoint.save_checkpoint(
                self.ckpt_path,
                checkpoint_payload(
                    parts,
                    replace(
                        state, wall_s=self.wall_s(), peak_cuda_mb=self.peak_cuda_mb(), peak_rss_mb=self.peak_rss_mb()
                    ),
                    self.run_id,
                    config.config_hash(),
                ),
            )

    def weights_of(self, meter: EpochMeter) -> tuple[np.ndarray | None, tuple[list[int], np.ndarray] | None]:
        """The epoch's mean weights and, when logged per step, (global steps, weights)."""
        mean = (meter.weight_sum / meter.weighted_steps).cpu().numpy() if meter.weighted_steps else None
        per_step = None
        if self.per_step_weights and meter.step_weights:
            first = self.state.global_step - meter.steps
            per_step = (list(range(first, self.state.global_step)), torch.stack(meter.step_weights).cpu().numpy())
        return mean, per_step

    def select(self, epoch: int, val: TaskMetrics, val_probs: np.ndarray) -> None:
        """Keep the model of this epoch if it is the best so far on validation (or `--select last`)."""
        state = self.state
        val_auroc = val.mean()["auroc"]
        score = val_auroc if np.isfinite(val_auroc) else -val.mean()["loss"]
        if self.config.select == "last" or score > state.best_score or state.best_state is None:
            state.best_score, state.best_epoch = float(score), epoch
            state.best_state = copy.deepcopy(self.parts.model.state_dict())
            state.best_val_probs = torch.from_numpy(val_probs)

    def test_and_store(self, rss_scope: str) -> tuple[TaskMetrics, float, float | None, float]:
        """Test once, with the model selected on validation, and store the result with its costs.
        Returns the test metrics, the wall time and the peak CUDA and RSS memory."""
        config, parts, state, device = self.config, self.parts, self.state, self.parts.device
        parts.model.load_state_dict(state.best_state)
        t_eval = costs.now(device)
        test, test_probs = evaluate(parts.model, self.test_split, config, device, self.task_loss)
        cross = self.cross_tests()
        state.eval_s += costs.now(device) - t_eval
        wall_s = self.wall_s()
        cuda_mb, rss_mb = self.peak_cuda_mb(), self.peak_rss_mb()
        unreliable, reason = machine_load.timing_reliability(state.other_cpu_s, state.capacity_s, self.load.measurable)
        run_costs = dict(
            device=device_name(device),
            wall_s=wall_s,
            train_s=state.train_s,
            eval_s=state.eval_s,
            median_step_s=warm_median(state.step_times),
            median_method_s=warm_median(state.method_times),
            median_step_cpu_s=warm_median(state.step_cpu_times),
            images_per_s=state.global_step * config.batch_size / state.train_s if state.train_s > 0 else None,
            peak_cuda_mb=cuda_mb,
            peak_rss_mb=rss_mb,
            rss_scope=rss_scope,
            other_load=machine_load.other_load(state.other_cpu_s, state.capacity_s),
            unreliable=unreliable,
            unreliable_reason=reason,
        )
        self.sink.complete(
            CompletedRun(
                state.best_epoch,
                test,
                self.data.val,
                state.best_val_probs.numpy(),
                self.data.test,
                test_probs,
                run_costs,
                self.diagnostics(),
                cross,
            )
        )
        return test, wall_s, cuda_mb, rss_mb

    def cross_tests(self) -> dict[str, tuple[TaskMetrics, Split]]:
        """The selected model's metrics on other datasets' test splits (`--test-dataset`), each task on the images
        labelled for it there (the loss masked whatever the run's own data)."""
        if not self.data.cross_tests:
            return {}
        config, device = self.config, self.parts.device
        masked = build_task_loss(config.loss, config.head, self.data.train.labels, masked=True).to(device)
        out = {}
        for name, split in self.data.cross_tests.items():
            metrics, _ = evaluate(self.parts.model, DeviceSplit.from_split(split, device), config, device, masked)
            out[name] = (metrics, split)
        return out

    def diagnostics(self) -> dict[str, float]:
        """The method's counters, plus (where labels can be missing) the task-steps that had no label."""
        counters = dict(self.parts.method.diagnostics())
        if self.data.has_missing_labels:
            counters["unlabelled_task_steps"] = float(self.state.unlabelled_task_steps)
        return counters

    def wall_s(self) -> float:
        """Wall time of the run: earlier attempts up to their last checkpoint, plus this one."""
        return self.state.wall_s + time.perf_counter() - self.t_start

    def peak_cuda_mb(self) -> float | None:
        """Peak CUDA memory over this and earlier attempts."""
        return larger(self.state.peak_cuda_mb, costs.peak_cuda_mb(self.parts.device))

    def peak_rss_mb(self) -> float | None:
        """Peak resident memory over this and earlier attempts."""
        return larger(self.state.peak_rss_mb, costs.peak_rss_mb())


def warm_median(times: list[float], warm_up: int = 5) -> float:
    """Median of the steps after the first `warm_up` (only the last step when there are no more than
    `warm_up`); NaN without steps."""
    return statistics.median(times[min(len(times) - 1, warm_up) :]) if times else float("nan")


def first_bad_step(bad: torch.Tensor) -> int | None:
    """The step recorded in the on-device marker (−1: none); one host sync."""
    v = int(bad.item())
    return v if v >= 0 else None


def larger(a: float | None, b: float | None) -> float | None:
    """max of two optional numbers."""
    return b if a is None else a if b is None else max(a, b)


def device_name(device: torch.device) -> str:
    """The GPU's name, or "cpu"."""
    return str(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu"
