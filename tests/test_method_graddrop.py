"""GradDrop: the sign purity and masks of Algorithm 1 on cases with known answers, no weights, one run."""

from __future__ import annotations

import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.graddrop import GradDrop, graddrop_gradient, sign_purity
from mtlbench.methods.params import GradDropParams

TASKS = ("a", "b")


def ctx(grads: torch.Tensor, features: torch.Tensor) -> StepContext:
    """A step whose per-task feature gradients are `grads` (T, B, D) at `features` (B, D)."""
    t = grads.shape[0]
    return StepContext(torch.ones(t), 0, 0, grads=grads.reshape(t, -1), space_tensors=(features,))


def test_purity_is_the_share_of_positive_gradient_mass() -> None:
    signed = torch.tensor([[3.0, 1.0, -2.0], [-1.0, 1.0, -2.0]])
    assert sign_purity(signed).tolist() == pytest.approx([0.75, 1.0, 0.0], abs=1e-6)  # a/(a+b), all +, all −


def test_agreeing_signs_keep_every_gradient() -> None:
    grads = torch.rand(2, 4, 6) + 0.1  # all positive: P = 1 > U
    features = torch.rand(4, 6) + 0.1
    out = GradDrop(TASKS).step(ctx(grads, features))
    assert out.weights is None and out.objective is None
    assert torch.allclose(out.shared_grad, grads.sum(0).reshape(-1))
    out = GradDrop(TASKS).step(ctx(-grads, features))  # all negative: P = 0 < U
    assert torch.allclose(out.shared_grad, -grads.sum(0).reshape(-1))


def test_conflicting_signs_keep_exactly_one_sign_positive_with_probability_p() -> None:
    """Task a pushes +3, task b −1 at every element: P = 3/4; each element keeps a's or b's gradient."""
    d = 20_000
    grads = torch.stack([torch.full((1, d), 3.0), torch.full((1, d), -1.0)])
    out = GradDrop(TASKS, generator=torch.Generator().manual_seed(0)).step(ctx(grads, torch.ones(1, d)))
    kept = out.shared_grad
    assert set(kept.unique().tolist()) == {3.0, -1.0}
    assert (kept == 3.0).float().mean().item() == pytest.approx(0.75, abs=0.015)  # 5 binomial sd


def test_sign_of_the_activation_enters_the_purity() -> None:
    """With A < 0 a positive ∇_A L counts as negative (∇_i = sign(A)·∇_A L): then P = 0 < U and the
    negative-signed task survives, i.e. the one whose raw gradient is positive."""
    grads = torch.tensor([[[2.0]], [[-1.0]]])
    features = torch.tensor([[-1.0]])
    uniform = torch.tensor([0.5])
    signed = (grads * features.sign()).sum(1)
    assert sign_purity(signed).item() == pytest.approx(1 / 3, abs=1e-6)  # ½(1 + (−2+1)/3)
    assert graddrop_gradient(grads, features, uniform, 0.0).item() == 2.0  # P < U: keep ∇_i < 0, task a


def test_leak_one_is_the_plain_sum_and_leak_is_checked() -> None:
    grads = torch.randn(2, 3, 5)
    out = GradDrop(TASKS, GradDropParams(leak=1.0)).step(ctx(grads, torch.rand(3, 5)))
    assert torch.allclose(out.shared_grad, grads.sum(0).reshape(-1))
    with pytest.raises(UserError, match="leak"):
        GradDrop(TASKS, GradDropParams(leak=1.5))


def test_tiny_training_run_stores_no_weights(tiny_run) -> None:
    run = tiny_run("graddrop", epochs=2)
    run.assert_complete()
    assert run.weights == []  # an aggregator without task weights logs none
