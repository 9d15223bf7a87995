"""Equal weighting: all weights 1, so the trainer's objective is Σ_t L_t."""

import numpy as np
import pytest
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
    assert EqualWeighting.weight_scale == "sum-to-T"


def test_tiny_training_run_logs_unit_weights(tiny_run, toy_bundle):
    run = tiny_run("ew")
    run.assert_complete()
    with run.store() as store:
        losses = {
            r["task"]: r["loss"]
            for r in store.query("SELECT task, loss FROM metrics WHERE run_id=? AND split='test'", (run.out.run_id,))
        }
        _, labels, probs = store.predictions(run.out.run_id, "test")
    assert [r["weight"] for r in run.weights] == [1.0] * 14
    # the stored test loss is the binary cross-entropy of the stored test probabilities, per task
    assert labels.tolist() == toy_bundle.test.labels.tolist()
    p, y = probs.astype(np.float64), labels.astype(np.float64)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=0)
    assert [losses[t] for t in TASK_NAMES] == pytest.approx(bce.tolist(), rel=1e-5)
