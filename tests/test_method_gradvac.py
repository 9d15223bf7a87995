"""GradVac: the Gramian form equals Algorithm 1 on the vectors; targets reached exactly; the EMA state."""

import copy
import io
import math

import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.gradvac import GradVac, gradvac_pass
from mtlbench.methods.params import GradVacParams
from mtlbench.methods.pcgrad import pcgrad_coefficients, pcgrad_orders
from tests.gramian_cases import end_to_end_weights, ones


def jacobian(t: int, p: int, seed: int) -> torch.Tensor:
    """Random gradients of unequal sizes around a shared direction (positive and negative cosines)."""
    g = torch.Generator().manual_seed(seed)
    j = torch.randn(t, p, generator=g, dtype=torch.float64) + 0.5 * torch.randn(1, p, generator=g, dtype=torch.float64)
    return j * torch.rand(t, 1, generator=g, dtype=torch.float64).add(0.1) * 5


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity."""
    return (a @ b / (a.norm() * b.norm())).item()


def gradvac_on_vectors(
    j: torch.Tensor, targets: torch.Tensor, orders: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: Algorithm 1 of the paper on the vectors; the adjusted gradients and the new targets."""
    out, targets = j.clone(), targets.clone()
    for i, order in enumerate(orders.tolist()):
        for k in order:
            phi = cos(out[i], j[k])
            target = targets[i, k].item()
            if phi < target:
                scale = (target * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - target**2)) / math.sqrt(1 - target**2)
                out[i] = out[i] + out[i].norm() * scale / j[k].norm() * j[k]
            targets[i, k] = (1 - beta) * target + beta * phi
    return out, targets


def test_pair_above_its_target_is_left_alone_and_one_below_is_raised_exactly():
    g1 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    g2 = torch.tensor([0.5, math.sqrt(0.75), 0.0], dtype=torch.float64) * 3  # cos 0.5
    j = torch.stack([g1, g2])
    orders = torch.tensor([[1], [0]])
    low = torch.tensor([[0.0, 0.3], [0.3, 0.0]], dtype=torch.float64)
    result = gradvac_pass(j @ j.T, low, orders, beta=0.5)
    assert torch.equal(result.coefficients, torch.eye(2, dtype=torch.float64)) and result.adjusted_pairs == 0
    high = torch.tensor([[0.0, 0.8], [0.9, 0.0]], dtype=torch.float64)
    result = gradvac_pass(j @ j.T, high, orders, beta=0.5)
    adjusted = result.coefficients @ j
    assert cos(adjusted[0], g2) == pytest.approx(0.8, abs=1e-12)
    assert cos(adjusted[1], g1) == pytest.approx(0.9, abs=1e-12)
    # only g_j is added: g_i' stays in span{g_i, g_j} with its own coefficient 1
    assert torch.allclose(result.coefficients.diagonal(), torch.ones(2, dtype=torch.float64))
    # the EMA takes the similarity observed before the adjustment
    assert result.targets[0, 1].item() == pytest.approx(0.5 * 0.8 + 0.5 * 0.5)
    assert result.targets[1, 0].item() == pytest.approx(0.5 * 0.9 + 0.5 * 0.5)


@pytest.mark.parametrize("t, p, seed", [(3, 10, 0), (6, 12, 1), (14, 50, 2)])
def test_zero_targets_are_pcgrad(t, p, seed):
    """φ̂ = 0 raises every negative cosine to 0: PCGrad's projection, in the same orders."""
    j = torch.randn(t, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)  # many conflicts
    orders = pcgrad_orders(t, torch.Generator().manual_seed(seed))
    result = gradvac_pass(j @ j.T, torch.zeros(t, t, dtype=torch.float64), orders, beta=0.5)
    assert result.adjusted_pairs > 0
    assert torch.allclose(result.coefficients, pcgrad_coefficients(j @ j.T, orders), atol=1e-12)


@pytest.mark.parametrize("t, p, seed", [(3, 10, 3), (5, 8, 4), (14, 50, 5), (14, 300, 6)])
def test_steps_equal_algorithm_one_on_the_vectors_with_the_state_carried(t, p, seed):
    m = GradVac([str(i) for i in range(t)], GradVacParams(beta=0.3), generator=torch.Generator().manual_seed(seed))
    mirror = torch.Generator().manual_seed(seed)
    targets = torch.zeros(t, t, dtype=torch.float64)
    raised = False
    for step in range(4):
        j = jacobian(t, p, 10 * seed + step)
        out = m.step(StepContext(ones(t), step, 0, grads=j))
        adjusted, targets = gradvac_on_vectors(j, targets, pcgrad_orders(t, mirror), 0.3)
        assert torch.allclose(out.shared_grad, adjusted.sum(0), rtol=1e-9, atol=1e-10)
        assert torch.allclose(m.targets_, targets, atol=1e-12)
        raised = raised or (step > 0 and not torch.allclose(out.weights, ones(t)))
    assert raised  # after step 0 some pair's cosine fell below its EMA target and was raised
    assert m.targets_.diagonal().abs().sum() == 0


def test_targets_are_an_ema_across_steps():
    """Two tasks, cosines c1 then c2: φ̂ = βc1 after step 1, (1−β)βc1 + βc2 after step 2."""
    beta = 0.25
    m = GradVac(["a", "b"], GradVacParams(beta=beta))
    e1, e2 = torch.eye(2, dtype=torch.float64)
    c1, c2 = 0.6, -0.2
    for j in (
        torch.stack([e1, c1 * e1 + math.sqrt(1 - c1**2) * e2]),
        torch.stack([e1, c2 * e1 + math.sqrt(1 - c2**2) * e2]),
    ):
        m.step(StepContext(ones(2), 0, 0, grads=j))
    expected = (1 - beta) * beta * c1 + beta * c2
    assert torch.allclose(m.targets_, torch.tensor([[0.0, expected], [expected, 0.0]], dtype=torch.float64))


def test_state_is_a_buffer_and_a_restore_resumes_exactly():
    t = 5
    m = GradVac(list("abcde"), generator=torch.Generator().manual_seed(1))
    assert "targets_" in dict(m.named_buffers())
    grads = [jacobian(t, 20, 40 + k) for k in range(6)]
    for k in range(3):
        m.step(StepContext(ones(t), k, 0, grads=grads[k]))
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert saved["targets_"].abs().sum() > 0
    straight = [m.step(StepContext(ones(t), k, 0, grads=grads[k])).weights for k in range(3, 6)]
    restored = GradVac(list("abcde"), generator=torch.Generator().manual_seed(99))
    restored.load_state_dict(copy.deepcopy(saved))
    resumed = [restored.step(StepContext(ones(t), k, 0, grads=grads[k])).weights for k in range(3, 6)]
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))
    assert torch.equal(m.targets_, restored.targets_)


def test_orders_come_from_the_methods_generator_only():
    j = torch.randn(6, 12, generator=torch.Generator().manual_seed(7), dtype=torch.float64)  # many conflicts
    before = torch.get_rng_state()
    a = GradVac(list("abcdef"), generator=torch.Generator().manual_seed(0)).step(StepContext(ones(6), 0, 0, grads=j))
    b = GradVac(list("abcdef"), generator=torch.Generator().manual_seed(0)).step(StepContext(ones(6), 0, 0, grads=j))
    c = GradVac(list("abcdef"), generator=torch.Generator().manual_seed(5)).step(StepContext(ones(6), 0, 0, grads=j))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a.weights, b.weights) and not torch.equal(a.weights, c.weights)


def test_unreachable_target_is_skipped_and_counted():
    j = jacobian(2, 6, 9)
    m = GradVac(["a", "b"])
    m.targets_[0, 1] = 1.0  # cos 1 cannot be reached by adding a finite multiple of g_1
    out = m.step(StepContext(ones(2), 0, 0, grads=j))
    assert torch.isfinite(out.weights).all()
    assert m.diagnostics()["unreachable_target_pairs"] == 1


def test_cancelled_gradient_has_cosine_zero():
    """g and −g with target 0: the projection cancels g_1' to 0; its later cosines count as 0 (LibMTL's 1e-8)."""
    g = torch.randn(8, dtype=torch.float64)
    j = torch.stack([g, -g, torch.randn(8, dtype=torch.float64)])
    orders = torch.tensor([[1, 2], [0, 2], [0, 1]])
    result = gradvac_pass(j @ j.T, torch.zeros(3, 3, dtype=torch.float64), orders, beta=1.0)
    assert torch.allclose(result.coefficients[0] @ j, torch.zeros(8, dtype=torch.float64), atol=1e-12)
    assert result.targets[0, 2].item() == 0.0 and torch.isfinite(result.coefficients).all()


def test_nan_and_zero_gradients_are_left_out_and_their_targets_kept():
    t = 5
    j = jacobian(t, 16, 11)
    j[0, 2] = float("nan")
    j[3] = 0.0
    m = GradVac(list("abcde"), generator=torch.Generator().manual_seed(2))
    start = torch.full((t, t), 0.4, dtype=torch.float64).fill_diagonal_(0.0)
    m.targets_.copy_(start)
    out = m.step(StepContext(ones(t), 0, 0, grads=j))
    assert torch.isfinite(out.weights).all() and torch.isfinite(out.shared_grad).all()
    assert out.weights[0] == 0 and out.weights[3] == 0
    keep = torch.tensor([1, 2, 4])
    adjusted, targets = gradvac_on_vectors(
        j[keep], start[keep][:, keep], pcgrad_orders(3, torch.Generator().manual_seed(2)), 0.5
    )
    assert torch.allclose(out.shared_grad, adjusted.sum(0), rtol=1e-9)
    assert torch.allclose(m.targets_[keep][:, keep], targets)
    for left_out in (0, 3):
        assert torch.equal(m.targets_[left_out], start[left_out]) and torch.equal(
            m.targets_[:, left_out], start[:, left_out]
        )
    d = m.diagnostics()
    assert d["nonfinite_grad_rows"] == 1 and d["zero_grad_rows"] == 1 and d["nonfinite_update_steps"] == 0
    assert GradVac.weight_scale == "none" and GradVac.needs == "shared_params"


def test_bad_params():
    for beta in (-0.1, 1.5):
        with pytest.raises(UserError, match="beta"):
            GradVac(list("ab"), GradVacParams(beta=beta))
    assert GradVacParams().beta == 0.5


@pytest.mark.parametrize("t", [3, 14])
@pytest.mark.parametrize("seed", range(3))
def test_matches_torchjd(t, seed):
    """torchjd's GradVacWeighting draws each task's order with torch.randperm from the global RNG, task by task
    as pcgrad_orders does: seeding the global RNG as our generator gives the same orders, over several steps
    (its state φ̂ carried likewise). With eps = 0 it is the paper's formula, as here, and matches to rounding;
    with its default eps = 1e-8 (LibMTL's) it differs by about 1e-8 relative at these gradient sizes."""
    torchjd = pytest.importorskip("torchjd")
    ours = GradVac([str(i) for i in range(t)], generator=torch.Generator().manual_seed(seed))
    exact = torchjd.aggregation.GradVacWeighting(beta=0.5, eps=0.0)
    libmtl_eps = torchjd.aggregation.GradVacWeighting(beta=0.5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(3):
            j = jacobian(t, 60, 100 * seed + step)
            out = ours.step(StepContext(ones(t), step, 0, grads=j))
            state = torch.get_rng_state()
            expected = exact(j @ j.T)
            torch.set_rng_state(state)
            approximate = libmtl_eps(j @ j.T)
            assert torch.allclose(out.weights, expected, rtol=1e-6, atol=1e-12)
            assert torch.allclose(ours.targets_, exact._phi_t, atol=1e-12)
            assert torch.allclose(out.weights, approximate, rtol=1e-6, atol=1e-6)


def test_end_to_end_run(tiny_run, toy_bundle):
    end_to_end_weights(tiny_run("gradvac"), toy_bundle, "unreachable_target_pairs")


def test_a_task_without_labels_is_left_out_as_on_the_present_tasks_alone():
    """Missing labels: the absent task's zero gradient row gets weight 0 and is counted; the rest is the method on
    the present tasks (tests/gramian_cases.py)."""
    from tests.gramian_cases import assert_absent_task_left_out

    assert_absent_task_left_out(GradVac, None)
