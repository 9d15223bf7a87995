"""DeepChest: dynamic, gradient-free, performance-driven task weighting.

Mohamed et al., "DeepChest: Dynamic Gradient-Free Task Weighting for Effective Multi-Task
Learning in Chest X-ray Classification", 2025 (arXiv:2505.23595). Implemented as in the
authors' released code (DeepChest-MTL, `weighting/dwbstl.py` and the trainer that calls it):

* weights start at 1.0, or from a JSON file of initial weights, or from single-task
  accuracies as w_t = 1 + (1 − acc_t) / 2 (the paper's STL-based initialisation);
* after each epoch the threshold is the mean over tasks of the per-task training accuracy
  (measured in train mode over the epoch's batches); a task strictly below it gets
  w_t ← min(w_t · 1.1, 1.5), every other task w_t ← w_t / 1.05 (no lower bound);
* the loss is Σ_t w_t L_t; weights are not renormalised (so they need not sum to T).

`signal` chooses what drives the update: "train-accuracy" (as released), "val-accuracy", or
"train-loss" — a task whose mean training loss is above the mean over tasks counts as
"below", since the paper's abstract speaks of task-specific loss trends.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mtlbench.methods.base import EpochStats, Method, StepContext, StepOutput
from mtlbench.errors import UserError
from mtlbench.methods.params import DeepChestParams, authors_initial_weights, read_task_values, stl_accuracies
from mtlbench.registry import register_method


def lagging_tasks(scores: torch.Tensor, higher_is_better: bool) -> torch.Tensor:
    """Boolean mask of tasks strictly worse than the mean over tasks; a NaN score (a task without labels)
    is left out of the mean and never lags."""
    known = ~torch.isnan(scores)
    threshold = scores.mean() if bool(known.all()) else scores[known].mean()
    return scores < threshold if higher_is_better else scores > threshold


def deepchest_update(
    weights: torch.Tensor, lagging: torch.Tensor, increase: float, cap: float, decay: float
) -> torch.Tensor:
    """One DeepChest epoch update: lagging tasks ×increase capped at `cap`, others ÷decay."""
    return torch.where(lagging, torch.clamp(weights * increase, max=cap), weights / decay)


def initial_weights(params: DeepChestParams, task_names: Sequence[str]) -> torch.Tensor:
    """The starting weights: constant, from a weights file, or from single-task accuracies.

    The files were checked with the hyperparameters (DeepChestParams.check).
    """
    if params.init_weights_file:
        return torch.tensor(
            read_task_values(params.init_weights_file, task_names, "initial weights"), dtype=torch.float64
        )
    if params.init == "authors":
        return torch.tensor(authors_initial_weights(task_names), dtype=torch.float64)
    if params.init == "stl":
        if not params.stl_accuracies:
            raise UserError(
                "deepchest: init=stl reads the single-task runs' accuracies from the results database; "
                "`mtlbench run` fills them in (stl_accuracies) before the run"
            )
        acc = torch.tensor(stl_accuracies(params.stl_accuracies, task_names), dtype=torch.float64)
        return 1.0 + (1.0 - acc) / 2.0
    if params.init_accuracies_file:
        acc = torch.tensor(
            read_task_values(params.init_accuracies_file, task_names, "single-task accuracies"), dtype=torch.float64
        )
        return 1.0 + (1.0 - acc) / 2.0
    return torch.full((len(task_names),), float(params.initial_weight), dtype=torch.float64)


@register_method("deepchest")
class DeepChest(Method):
    """Gradient-free weighting updated once per epoch from per-task performance."""

    description = "DeepChest (2025): per-epoch ×1.1 (cap 1.5) for tasks below mean accuracy, ÷1.05 otherwise."

    def setup(self) -> None:
        self.register_buffer("weights_", initial_weights(self.params, self.task_names))

    def step(self, ctx: StepContext) -> StepOutput:
        """Weights fixed within an epoch; the trainer backpropagates Σ_t w_t L_t."""
        return StepOutput(weights=self.weights_.to(device=ctx.losses.device, dtype=ctx.losses.dtype))

    def end_epoch(self, stats: EpochStats) -> None:
        """Apply the DeepChest update with the chosen signal of the finished epoch; with missing labels a task
        without a score (NaN: no label in the epoch, or in validation) is left out of the mean and keeps its weight."""
        if self.params.signal == "train-accuracy":
            signal, higher_is_better = stats.train_accuracy, True
        elif self.params.signal == "val-accuracy":
            signal, higher_is_better = stats.val_accuracy, True
        else:
            signal, higher_is_better = stats.train_loss, False
        lagging = lagging_tasks(signal.double().cpu(), higher_is_better)
        p = self.params
        lagging = lagging.to(self.weights_.device)
        updated = deepchest_update(self.weights_, lagging, p.increase_factor, p.max_weight, p.decay_factor)
        if stats.labelled is not None:
            updated = torch.where(torch.isnan(signal).to(self.weights_.device), self.weights_, updated)
        self.weights_.copy_(updated)
