"""ExcessMTL: the excess-risk estimate, the multiplicative update, normalisation, state, torchjd, the authors' loop."""

import io

import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.excess_mtl import ExcessMTL, excess_risks, multiplicative_update
from mtlbench.methods.params import ExcessMTLParams
from mtlbench.model import per_task_losses
from mtlbench.registry import METHODS
from tests.authors_loop import twin_run

TASKS = ("a", "b", "c", "d")


def jacobian(seed: int, p: int = 50) -> torch.Tensor:
    """(4, p) per-task gradients whose scales differ by task."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(4, p, generator=gen, dtype=torch.float64) * torch.tensor([[0.1], [1.0], [1.0], [3.0]])


def ctx(grads: torch.Tensor, k: int = 0) -> StepContext:
    return StepContext(torch.ones(grads.shape[0], dtype=grads.dtype), k, 0, grads)


def by_hand(jacobians, eta):
    """The authors' recursion in plain torch: weights after each step."""
    total, weights, first, out = torch.zeros_like(jacobians[0]), torch.ones(4, dtype=torch.float64), None, []
    for g in jacobians:
        total = total + g**2
        e = torch.stack([(g[i] / torch.sqrt(total[i] + 1e-7)) @ g[i] for i in range(4)])
        if first is None:
            first = e
        else:
            weights = weights * torch.exp(eta * e / first)
            weights = weights / weights.sum() * 4
        out.append(weights)
    return out


def test_first_step_records_the_baseline_and_keeps_weights_one():
    m = ExcessMTL(TASKS)
    g = jacobian(0)
    out = m.step(ctx(g))
    assert out.weights.tolist() == [1.0] * 4 and out.objective is None and out.shared_grad is None
    assert m.initial_risks_.tolist() == pytest.approx(((g**2) / torch.sqrt(g**2 + 1e-7)).sum(1).tolist(), rel=1e-12)
    assert torch.equal(m.sq_grad_sum_, g**2)
    m.step(ctx(jacobian(1), 1))
    assert out.weights.tolist() == [1.0] * 4  # a copy: the trainer keeps it while the buffer moves on


def test_weights_by_hand_over_several_steps():
    jacobians = [jacobian(s) for s in range(5)]
    m = ExcessMTL(TASKS, ExcessMTLParams(robust_step_size=0.3))
    for k, (g, expected) in enumerate(zip(jacobians, by_hand(jacobians, 0.3))):
        assert m.step(ctx(g, k)).weights.tolist() == pytest.approx(expected.tolist(), rel=1e-12)


def test_update_is_multiplicative_and_stays_normalised():
    m = ExcessMTL(TASKS, ExcessMTLParams(robust_step_size=0.5))
    previous = m.step(ctx(jacobian(1))).weights
    first = m.initial_risks_.clone()
    for k in range(1, 6):
        g = jacobian(10 + k)
        total = m.sq_grad_sum_ + g**2
        risks = ((g**2) / torch.sqrt(total + 1e-7)).sum(1)
        weights = m.step(ctx(g, k)).weights
        assert weights.sum().item() == pytest.approx(4.0, rel=1e-12)
        ratio = (weights / previous) / torch.exp(0.5 * risks / first)  # w_new / w_old = exp(η r_t) / Σ: one constant
        assert ratio.tolist() == pytest.approx([ratio[0].item()] * 4, rel=1e-10)
        previous = weights


def test_a_task_further_from_convergence_gains_weight():
    """Same gradients as at the first step, except task 3's are 5 times larger: its excess risk ratio is largest."""
    g = jacobian(2)
    m = ExcessMTL(TASKS)
    m.step(ctx(g))
    g2 = g.clone()
    g2[3] *= 5
    w = m.step(ctx(g2, 1)).weights
    assert int(w.argmax()) == 3 and w[3] > 1 > w[0]


def test_excess_risk_is_the_diagonal_adagrad_quadratic_form():
    g = jacobian(3)
    total = g**2 + jacobian(4) ** 2
    expected = torch.stack([g[i] @ torch.diag(1 / torch.sqrt(total[i] + 1e-7)) @ g[i] for i in range(4)])
    assert excess_risks(g**2, total).tolist() == pytest.approx(expected.tolist(), rel=1e-12)
    w = torch.tensor([0.5, 1.5, 1.0, 1.0], dtype=torch.float64)
    r = torch.tensor([1.0, 0.2, 3.0, 0.0], dtype=torch.float64)
    product = w * torch.exp(0.7 * r)
    assert multiplicative_update(w, r, 0.7).tolist() == pytest.approx((4 * product / product.sum()).tolist(), rel=1e-12)


def test_non_finite_rows_and_a_zero_baseline_are_left_out_and_counted():
    m = ExcessMTL(TASKS)
    g = jacobian(5)
    g[0] = 0.0  # baseline e_0 = 0: its ratio would be infinite
    m.step(ctx(g))
    before = m.sq_grad_sum_.clone()
    g2 = jacobian(6)
    g2[2, 7] = float("nan")
    w = m.step(ctx(g2, 1)).weights
    assert torch.isfinite(w).all() and w.sum().item() == pytest.approx(4.0)
    assert torch.equal(m.sq_grad_sum_[2], before[2])  # the NaN row added nothing
    assert m.diagnostics() == {"skipped_task_rows": 2.0}


def test_state_is_buffers_and_a_checkpoint_continues_identically():
    m = ExcessMTL(TASKS)
    for k in range(3):
        m.step(ctx(jacobian(20 + k), k))
    assert {"weights_", "initial_risks_", "sq_grad_sum_"} <= set(dict(m.named_buffers()))
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    restored = ExcessMTL(TASKS)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.has_initial_ and restored.sq_grad_sum_.shape == (4, 50)
    for k in range(3, 6):
        assert torch.equal(m.step(ctx(jacobian(20 + k), k)).weights, restored.step(ctx(jacobian(20 + k), k)).weights)


def test_matches_torchjd_with_one_warmup_step_up_to_its_simplex_scale():
    """torchjd's ExcessMTLWeighting with n_warmup_steps=1 takes the first step's risks as the baseline without
    moving the weights, as the authors' code does; its weights lie on the simplex (ours sum to T), and it divides
    by e⁽¹⁾ + 1e-7."""
    aggregation = pytest.importorskip("torchjd.aggregation")
    theirs = aggregation.ExcessMTLWeighting(robust_step_size=0.4, n_warmup_steps=1)
    ours = ExcessMTL(TASKS, ExcessMTLParams(robust_step_size=0.4))
    for k in range(6):
        g = jacobian(30 + k)
        # the residual (~1e-8 here) is torchjd's divisor e⁽¹⁾ + 1e-7
        assert ours.step(ctx(g, k)).weights.tolist() == pytest.approx((4 * theirs(g)).tolist(), rel=1e-6)


def test_torchjd_without_warmup_already_moves_the_weights_at_the_first_step():
    """The convention difference named in the docstring: torchjd's default (n_warmup_steps=0) updates at the first
    call with the raw risks, the authors' code (and this method) do not."""
    aggregation = pytest.importorskip("torchjd.aggregation")
    g = jacobian(40)
    theirs = 4 * aggregation.ExcessMTLWeighting(robust_step_size=0.4)(g)
    assert ExcessMTL(TASKS, ExcessMTLParams(robust_step_size=0.4)).step(ctx(g)).weights.tolist() == [1.0] * 4
    assert not torch.allclose(theirs, torch.ones(4, dtype=torch.float64))


def test_registration_and_defaults():
    cls = METHODS.get("excess-mtl")
    assert cls is ExcessMTL and cls.needs == "shared_params" and cls.weight_scale == "sum-to-T" and not cls.syncs_host
    assert ExcessMTLParams().robust_step_size == 1e-2
    with pytest.raises(ValueError, match="ctx.grads"):
        ExcessMTL(TASKS).step(StepContext(torch.ones(4), 0, 0))


@pytest.mark.parametrize("eta", [0.0, -0.1, float("inf"), float("nan")])
def test_bad_step_size_is_a_user_error(eta):
    with pytest.raises(UserError, match="robust_step_size"):
        ExcessMTL(TASKS, ExcessMTLParams(robust_step_size=eta))


def test_training_steps_equal_the_authors_loop():
    """Four steps through the trainer equal yifei-he/ExcessMTL's ExcessMTL.backward written out: autograd gradients of
    each loss with respect to the shared parameters, the excess risks, the update from the second step, and a backward
    of Σ w L through the whole model (so each head gets w_t ∇L_t)."""
    run = twin_run(ExcessMTL, steps=4)
    logged = [out.weights for out in run.train_ours(ExcessMTL(tuple("abcde"), ExcessMTLParams(robust_step_size=0.5)))]

    batches, theirs, opt = run.batches, run.theirs, run.their_optimizer()
    shared = theirs.shared_parameters()
    loss_weight, grad_sum, initial_w = torch.ones(5), None, None
    for k, (x, y) in enumerate(batches):
        losses = per_task_losses(theirs(x)[1], y, "bce")
        grads = torch.stack(
            [
                torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[t], shared, retain_graph=True)])
                for t in range(5)
            ]
        )
        grad_sum = torch.zeros_like(grads) if grad_sum is None else grad_sum
        w = torch.zeros(5)
        for i in range(5):
            grad_sum[i] += grads[i] ** 2
            w[i] = grads[i] * (1 / torch.sqrt(grad_sum[i] + 1e-7)) @ grads[i]
        if initial_w is None:
            initial_w = w
        else:
            loss_weight = loss_weight * torch.exp(w / initial_w * 0.5)
            loss_weight = (loss_weight / loss_weight.sum() * 5).detach()
        opt.zero_grad()
        (losses * loss_weight).sum().backward()
        opt.step()
        assert torch.allclose(logged[k], loss_weight, rtol=1e-5)

    run.assert_same_models()


def test_tiny_training_run(tiny_run, toy_bundle):
    run = tiny_run("excess-mtl")
    run.assert_complete()
    run.per_step_epoch_means(len(toy_bundle.train) // 16)
    per_step = run.per_step()
    assert per_step[0] == [1.0] * 14  # the baseline step
    assert all(sum(w) == pytest.approx(14.0, rel=1e-5) and min(w) > 0 for w in per_step.values())
    assert run.diagnostics == {"skipped_task_rows": 0.0}


def test_a_task_without_labels_takes_its_baseline_at_its_first_label_and_keeps_its_weight():
    m = ExcessMTL(("a", "b", "c", "d"))
    first = jacobian(0)
    first[3] = 0.0  # d: no labelled image in the first batch
    labelled = torch.tensor([2, 2, 2, 0])
    m.step(StepContext(torch.tensor([0.5, 0.5, 0.5, 0.0], dtype=torch.float64), 0, 0, first, labelled=labelled))
    assert m.initial_risks_[3].item() == 0.0 and m.weights_.tolist() == [1.0] * 4
    second = jacobian(1)
    m.step(StepContext(torch.ones(4, dtype=torch.float64), 1, 0, second, labelled=torch.tensor([2, 2, 2, 2])))
    sq_sum = first.square() + second.square()
    risks = excess_risks(second.square(), sq_sum)
    assert m.initial_risks_[3].item() == pytest.approx(risks[3].item(), rel=1e-12)  # its first labelled step
    ratios = torch.cat([risks[:3] / m.initial_risks_[:3], torch.ones(1, dtype=torch.float64)])  # d: r = 1
    assert m.weights_.tolist() == pytest.approx(multiplicative_update(torch.ones(4), ratios, 0.01).tolist(), rel=1e-9)
    third = jacobian(2)
    third[0] = 0.0  # a: no label this time; it keeps its weight, the others share the rest of T
    before = m.weights_.clone()
    out = m.step(StepContext(torch.ones(4, dtype=torch.float64), 2, 0, third, labelled=torch.tensor([0, 1, 1, 1])))
    assert out.weights[0].item() == before[0].item() and out.weights.sum().item() == pytest.approx(4.0)
    assert m.diagnostics() == {"skipped_task_rows": 0.0}
