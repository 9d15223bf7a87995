"""GLS: the geometric mean objective, its gradient as the logged weights, small losses, a tiny run."""

import math

import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.gls import GeometricLossStrategy, geometric_mean, gls_weights
from mtlbench.registry import METHODS

LOSSES = (0.5, 2.0, 0.1, 1.3)


def step(losses, dtype=torch.float64):
    x = torch.tensor(losses, dtype=dtype, requires_grad=True)
    out = GeometricLossStrategy(tuple("abcd"[: len(losses)])).step(StepContext(x, 0, 0))
    return x, out


def test_objective_is_the_geometric_mean_and_its_gradient_the_weights():
    x, out = step(LOSSES)
    g = math.prod(LOSSES) ** (1 / 4)
    assert out.objective.item() == pytest.approx(g, rel=1e-12)
    out.objective.backward()
    by_hand = [g / (4 * L) for L in LOSSES]  # w_t = (Π L)^(1/T) / (T·L_t)
    assert x.grad.tolist() == pytest.approx(by_hand, rel=1e-12)
    assert out.weights.tolist() == pytest.approx(by_hand, rel=1e-12) and not out.weights.requires_grad


def test_equal_losses_get_equal_weights_one_over_T():
    _, out = step((0.7,) * 4)
    assert out.objective.item() == pytest.approx(0.7)
    assert out.weights.tolist() == pytest.approx([0.25] * 4, rel=1e-12)


def test_every_task_gets_the_same_weighted_loss_and_scaling_one_loss_is_scale_free():
    """w_t·L_t = L_GLS/T for every t; multiplying one loss by c multiplies L_GLS by c^(1/T) and that task's weight by
    c^(1/T − 1), so the relative gradients of the other tasks are unchanged up to the common factor."""
    x = torch.tensor(LOSSES, dtype=torch.float64)
    w = gls_weights(x)
    assert (w * x).tolist() == pytest.approx([geometric_mean(x).item() / 4] * 4, rel=1e-12)
    c = 100.0
    y = x.clone()
    y[1] *= c
    assert geometric_mean(y).item() == pytest.approx(geometric_mean(x).item() * c**0.25, rel=1e-12)
    ratio = gls_weights(y) / w
    assert ratio[1].item() == pytest.approx(c ** (0.25 - 1), rel=1e-12)
    assert ratio[[0, 2, 3]].tolist() == pytest.approx([c**0.25] * 3, rel=1e-12)


def test_small_losses_do_not_underflow_in_float32():
    """14 losses of 1e-4: their product (1e-56) is 0 in float32; the log-space form keeps the exact answer."""
    small = torch.full((14,), 1e-4, dtype=torch.float32)
    assert small.prod().item() == 0.0  # what (Π L)^(1/T) computed directly would start from
    m = GeometricLossStrategy(tuple(f"t{i}" for i in range(14)))
    out = m.step(StepContext(small.clone().requires_grad_(), 0, 0))
    assert out.objective.item() == pytest.approx(1e-4, rel=1e-5)
    assert out.weights.tolist() == pytest.approx([1 / 14] * 14, rel=1e-5)
    assert out.weights.dtype == torch.float32


def test_matches_torchjd_geometric_mean():
    scalarization = pytest.importorskip("torchjd.scalarization")
    x, out = step(LOSSES)
    y = torch.tensor(LOSSES, dtype=torch.float64, requires_grad=True)
    reference = scalarization.GeometricMean()(y)
    reference.backward()
    out.objective.backward()
    assert out.objective.item() == pytest.approx(reference.item(), rel=1e-12)
    assert x.grad.tolist() == pytest.approx(y.grad.tolist(), rel=1e-12)


def test_registration_has_no_hyperparameters_and_no_state():
    cls = METHODS.get("gls")
    assert cls is GeometricLossStrategy and cls.needs == "losses" and cls.weight_scale == "none" and not cls.syncs_host
    with pytest.raises(UserError, match="unknown hyperparameter"):
        cls.make_params({"mu": 1.0})
    m = cls(("a", "b"))
    assert list(m.parameters()) == [] and list(m.buffers()) == [] and m.weights_changed_per_step()


def test_tiny_training_run(tiny_run, toy_bundle):
    run = tiny_run("gls")
    run.assert_complete()
    run.per_step_epoch_means(len(toy_bundle.train) // 16)
    for weights in run.per_step().values():
        # w_t = G/(T·L_t) with G the geometric mean, so the geometric mean of T·w_t is G/G = 1
        assert all(w > 0 for w in weights)
        assert math.exp(sum(math.log(14 * w) for w in weights) / 14) == pytest.approx(1.0, rel=1e-5)


def test_a_task_without_labels_is_left_out_the_geometric_mean_is_over_the_present_tasks():
    x = torch.tensor((0.5, 0.0, 0.1, 1.3), dtype=torch.float64, requires_grad=True)  # task b: no label
    out = GeometricLossStrategy(tuple("abcd")).step(StepContext(x, 0, 0, labelled=torch.tensor([2, 0, 1, 5])))
    present_x, present_out = step((0.5, 0.1, 1.3))  # GLS on the three present tasks alone
    assert out.objective.item() == pytest.approx((0.5 * 0.1 * 1.3) ** (1 / 3), rel=1e-12)
    assert out.objective.item() == pytest.approx(present_out.objective.item(), rel=1e-12)
    out.objective.backward()
    present_out.objective.backward()
    assert x.grad[[0, 2, 3]].tolist() == pytest.approx(present_x.grad.tolist(), rel=1e-12)
    assert x.grad[1].item() == 0.0 and not torch.isnan(x.grad).any()
    assert out.weights.tolist() == pytest.approx(
        [*present_out.weights[:1].tolist(), 0.0, *present_out.weights[1:].tolist()]
    )
