"""Equal weighting: all weights 1, so the trainer's objective is Σ_t L_t."""

import torch

from mtlbench.methods.base import StepContext
from mtlbench.methods.ew import EqualWeighting
from mtlbench.tasks import TASK_NAMES


def test_weights_are_ones_and_objective_is_the_sum():
    losses = torch.rand(len(TASK_NAMES), requires_grad=True)
    out = EqualWeighting(TASK_NAMES).step(StepContext(losses, 0, 0))
    assert out.weights.tolist() == [1.0] * len(TASK_NAMES)
    assert out.objective is None and out.shared_grad is None
    assert torch.allclose((out.weights * losses).sum(), losses.sum())
    assert EqualWeighting.normalization == "sum-to-T"
