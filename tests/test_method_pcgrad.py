"""PCGrad: the Gramian form equals the sequential projections on the vectors themselves."""

import pytest
import torch

from mtlbench.methods.base import StepContext
from mtlbench.methods.pcgrad import PCGrad, pcgrad_coefficients, pcgrad_orders, pcgrad_weights


def projected_on_vectors(j: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Reference: Algorithm 1 of the paper on the gradient vectors, (T, P) projected gradients."""
    out = j.clone()
    for i, order in enumerate(orders.tolist()):
        for k in order:
            dot = out[i] @ j[k]
            if dot < 0:
                out[i] = out[i] - dot / (j[k] @ j[k]) * j[k]
    return out


def conflicting_jacobian(t: int, p: int, seed: int) -> torch.Tensor:
    """Random gradients with many negative inner products."""
    g = torch.Generator().manual_seed(seed)
    j = torch.randn(t, p, generator=g, dtype=torch.float64)
    return j * torch.rand(t, 1, generator=g, dtype=torch.float64).add(0.1) * 10


@pytest.mark.parametrize("seed", range(4))
def test_two_task_closed_form(seed):
    g = torch.Generator().manual_seed(seed)
    g1, g2 = torch.randn(2, 9, generator=g, dtype=torch.float64)
    conflicting = seed % 2 == 0
    g2 = (-g1 if conflicting else g1) + 0.3 * g2
    j = torch.stack([g1, g2])
    coef = pcgrad_coefficients(j @ j.T, torch.tensor([[1], [0]]))
    projected = coef @ j
    if g1 @ g2 < 0:
        assert torch.allclose(projected[0], g1 - (g1 @ g2) / (g2 @ g2) * g2)
        assert torch.allclose(projected[1], g2 - (g1 @ g2) / (g1 @ g1) * g1)
    else:
        assert torch.allclose(projected, j)
    assert conflicting == bool(g1 @ g2 < 0)


@pytest.mark.parametrize("t, p, seed", [(3, 10, 0), (5, 4, 1), (14, 50, 2), (14, 200, 3), (8, 8, 4)])
def test_gramian_form_equals_projections_on_vectors(t, p, seed):
    j = conflicting_jacobian(t, p, seed)
    orders = pcgrad_orders(t, torch.Generator().manual_seed(seed))
    reference = projected_on_vectors(j, orders)
    projected = pcgrad_coefficients(j @ j.T, orders) @ j
    assert torch.allclose(projected, reference, atol=1e-10)
    # the last task each gradient met in its order never conflicts with the result
    last = orders[:, -1]
    assert ((projected * j[last]).sum(1) >= -1e-10).all()
    # the effective weights reproduce the update Σ_i g_i^PC
    w = pcgrad_weights(j @ j.T, orders)
    assert torch.allclose(w @ j, reference.sum(0), atol=1e-10)


def test_orders_are_permutations_of_the_other_tasks_and_follow_the_generator():
    orders = pcgrad_orders(6, torch.Generator().manual_seed(3))
    for i, row in enumerate(orders.tolist()):
        assert sorted(row) == [k for k in range(6) if k != i]
    assert torch.equal(orders, pcgrad_orders(6, torch.Generator().manual_seed(3)))
    assert not torch.equal(orders, pcgrad_orders(6, torch.Generator().manual_seed(4)))


def test_no_conflict_is_ew():
    j = torch.rand(4, 7, dtype=torch.float64)  # all inner products positive
    out = PCGrad(list("abcd")).step(StepContext(torch.ones(4, dtype=torch.float64), 0, 0, grads=j))
    assert out.weights.tolist() == [1.0] * 4 and torch.allclose(out.shared_grad, j.sum(0))
    assert PCGrad.weight_scale == "none" and PCGrad.needs == "shared_params"


def test_step_uses_the_methods_generator():
    j = conflicting_jacobian(6, 12, 9)
    m = PCGrad(list("abcdef"), generator=torch.Generator().manual_seed(42))
    out = m.step(StepContext(torch.ones(6, dtype=torch.float64), 0, 0, grads=j))
    orders = pcgrad_orders(6, torch.Generator().manual_seed(42))
    assert torch.allclose(out.shared_grad, projected_on_vectors(j, orders).sum(0), atol=1e-10)
    assert torch.allclose(out.weights, pcgrad_weights(j @ j.T, orders))


def test_nan_and_zero_gradients_are_left_out_and_counted():
    j = conflicting_jacobian(5, 12, 5)
    j[1, 0] = float("nan")
    j[4] = 0.0
    m = PCGrad(list("abcde"), generator=torch.Generator().manual_seed(0))
    out = m.step(StepContext(torch.ones(5, dtype=torch.float64), 0, 0, grads=j))
    assert torch.isfinite(out.weights).all() and torch.isfinite(out.shared_grad).all()
    assert out.weights[1] == 0 and out.weights[4] == 0
    keep = [0, 2, 3]
    orders = pcgrad_orders(3, torch.Generator().manual_seed(0))
    assert torch.allclose(out.shared_grad, projected_on_vectors(j[keep], orders).sum(0), atol=1e-10)
    d = m.diagnostics()
    assert d["nonfinite_grad_rows"] == 1 and d["zero_grad_rows"] == 1 and d["nonfinite_update_steps"] == 0


def test_end_to_end_run(tiny_run, toy_bundle):
    run = tiny_run("pcgrad")
    run.assert_complete()
    diag = run.diagnostics
    run.per_step_epoch_means(len(toy_bundle.train.labels) // 16)
    assert diag["nonfinite_update_steps"] == 0


def test_a_task_without_labels_is_left_out_as_on_the_present_tasks_alone():
    """Missing labels: the absent task's zero gradient row gets weight 0 and is counted; the rest is the method on
    the present tasks (tests/gramian_cases.py)."""
    from tests.gramian_cases import assert_absent_task_left_out

    assert_absent_task_left_out(PCGrad, None)
