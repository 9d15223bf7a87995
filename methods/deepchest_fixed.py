"""DeepChest's destination as static weights: does DeepChest's path matter, or only where it ends?

DeepChest (Mohamed et al., 2025; DeepChest-MTL weighting/dwbstl.py) updates each weight once per
epoch: a task whose training accuracy is strictly below the mean over tasks gets w ← min(1.1 w, 1.5),
every other task w ← w / 1.05. On chest X-rays the lagging tasks barely change from epoch to epoch:
a model's accuracy on a rare finding is close to that of always answering "absent", 1 − prevalence,
so the lagging tasks are the frequent ones. This method takes that ordering from the training
split's labels (accuracy max(P_t, 1 − P_t), P_t the prevalence), applies the released update
`epochs` times with it held fixed, and trains with the result from the first step. On NIH's
prevalences and 15 epochs (the authors' command) that is 1.5 for Infiltration, Effusion,
Atelectasis and Nodule and 1.05⁻¹⁵ ≈ 0.481 for the other ten.

Compared with `deepchest` under the same protocol, it says whether DeepChest's dynamics change the
result or only its final weights do. Not renormalised, as DeepChest ("none" scale).
"""

from __future__ import annotations

import torch

from mtlbench.methods.deepchest import deepchest_update, lagging_tasks
from mtlbench.methods.params import DeepChestFixedParams
from mtlbench.methods.static import StaticWeighting
from mtlbench.registry import register_method


def deepchest_destination(labels: torch.Tensor, params: DeepChestFixedParams) -> torch.Tensor:
    """The weights DeepChest's rule reaches after `params.epochs` updates when each task's accuracy is that of
    answering its majority class on these training labels (N, T); the prevalence is among the labelled images
    where float labels hold NaN for a missing label (a task without any has no accuracy and never lags)."""
    values = labels.to(torch.float64)
    prevalence = values.nanmean(dim=0) if labels.is_floating_point() else values.mean(dim=0)
    accuracy = torch.maximum(prevalence, 1.0 - prevalence)
    lagging = lagging_tasks(accuracy, higher_is_better=True)
    weights = torch.full_like(prevalence, float(params.initial_weight))
    for _ in range(params.epochs):
        weights = deepchest_update(weights, lagging, params.increase_factor, params.max_weight, params.decay_factor)
    return weights


@register_method("deepchest-fixed")
class DeepChestFixed(StaticWeighting):
    """Static weights w: DeepChest's rule iterated `epochs` times on the training split's majority accuracies."""

    description = "DeepChest's final weights (its rule iterated on the training prevalences) as static weights."

    def setup(self) -> None:
        self.register_buffer("weights_", torch.full((self.num_tasks,), float("nan"), dtype=torch.float64))
        self.bound = False  # set by bind_training_labels, at every (re)start

    def bind_training_labels(self, labels: torch.Tensor) -> None:
        """The destination for these training labels (the same labels give the same weights)."""
        self.weights_.copy_(deepchest_destination(labels, self.params))
        self.bound = True
