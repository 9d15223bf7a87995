"""FAMO (same-batch, the authors') and its next-batch approximation: the logit update and weights by
hand, against the released update rule and the authors' training loop, guards, one run each."""

import math

import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.famo import FAMO, FAMONextBatch, FAMOParams, softmax_vjp

TASKS = ("a", "b", "c")
BETA = 0.025
PREV = (1.0, 2.0, 0.5)
NOW = (0.5, 2.0, 0.25)  # log-loss decrease δ = (ln 2, 0, ln 2)


def ctx(values, step=0, requires_grad=False) -> StepContext:
    return StepContext(torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad), step, 0)


def softmax(xs) -> list[float]:
    e = [math.exp(x) for x in xs]
    return [x / sum(e) for x in e]


def hand_weights(z, losses) -> list[float]:
    """c·z_i/ℓ_i with c = 1 / Σ_j z_j/ℓ_j."""
    inv_c = sum(zi / li for zi, li in zip(z, losses))
    return [zi / li / inv_c for zi, li in zip(z, losses)]


def hand_vjp_at_uniform() -> list[float]:
    """J_z(0)ᵀ δ for δ = (ln 2, 0, ln 2): z_i·(δ_i − zᵀδ) with z = 1/3."""
    delta = [math.log(2), 0.0, math.log(2)]
    mean = sum(delta) / 3
    return [(d - mean) / 3 for d in delta]  # = (ln2/9, −2ln2/9, ln2/9)


VARIANTS = [FAMO, FAMONextBatch]


def one_update(m, before, after, k: int = 0):
    """One logit update with δ = log(before) − log(after): FAMO re-evaluates the same batch after
    the step; the next-batch approximation takes `after` from the next step. The output of the step
    that used `before`, and of the next step's (at `after`, for the approximation; None for FAMO)."""
    first = m.step(ctx(before, k))
    if isinstance(m, FAMO):
        m.after_update(ctx(before, k), lambda: torch.tensor(after, dtype=torch.float64))
        return first, None
    return first, m.step(ctx(after, k + 1))


@pytest.mark.parametrize("cls", VARIANTS)
def test_first_step_uniform_weights_and_no_update(cls):
    m = cls(TASKS)
    out = m.step(ctx(NOW))
    assert m.task_weights().tolist() == pytest.approx([1 / 3] * 3)
    assert out.weights.tolist() == pytest.approx([4 / 13, 1 / 13, 8 / 13], rel=1e-12)  # c = 6/13
    assert m.diagnostics() == {"logit_updates": 0.0, "skipped_logit_updates": 0.0}
    assert m.weights_changed_per_step() and cls.weight_scale == "none" and m.optimizer_groups() == []
    assert cls.reevaluates == (cls is FAMO)


def test_objective_value_and_its_gradient_are_the_weights():
    m = FAMO(TASKS)
    c = ctx(NOW, requires_grad=True)
    out = m.step(c)
    inv_c = sum((1 / 3) / L for L in NOW)
    assert out.objective.item() == pytest.approx(sum((1 / 3) * math.log(L) for L in NOW) / inv_c, rel=1e-12)
    out.objective.backward()
    assert c.losses.grad.tolist() == pytest.approx(out.weights.tolist(), rel=1e-12)  # ∇ = Σ w_i ∇ℓ_i
    assert sum(out.weights.tolist()) == pytest.approx(1.0)


@pytest.mark.parametrize("cls", VARIANTS)
def test_one_adam_update_by_hand(cls):
    m = cls(TASKS)  # Adam(lr=β, weight_decay=γ); γ·ξ = 0 at ξ = 0
    _, out = one_update(m, PREV, NOW)
    # first Adam step: m̂ = g, v̂ = g², so Δξ = −β·g / (|g| + 1e-8)
    xi = [-BETA * g / (abs(g) + 1e-8) for g in hand_vjp_at_uniform()]
    assert m.xi_.tolist() == pytest.approx(xi, rel=1e-12)
    assert xi[1] > 0 > xi[0]  # the task whose loss did not fall gains weight
    z = softmax(xi)
    assert m.task_weights().tolist() == pytest.approx(z, rel=1e-12)
    out = out or m.step(ctx(NOW, 1))
    assert out.weights.tolist() == pytest.approx(hand_weights(z, NOW), rel=1e-12)
    assert m.diagnostics() == {"logit_updates": 1.0, "skipped_logit_updates": 0.0}


@pytest.mark.parametrize("cls", VARIANTS)
def test_one_sgd_update_by_hand_algorithm_1(cls):
    m = cls(TASKS, FAMOParams(logit_optimizer="sgd"))
    one_update(m, PREV, NOW)
    assert m.xi_.tolist() == pytest.approx([-BETA * g for g in hand_vjp_at_uniform()], rel=1e-12)


@pytest.mark.parametrize("cls", VARIANTS)
def test_weight_decay_shrinks_the_logits(cls):
    m = cls(TASKS, FAMOParams(logit_optimizer="sgd", gamma=0.1))
    start = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    m.xi_.copy_(start)
    one_update(m, NOW, NOW)  # δ = 0: only the decay term acts, ξ ← ξ − β·γ·ξ
    assert m.xi_.tolist() == pytest.approx([x * (1 - BETA * 0.1) for x in start.tolist()], rel=1e-12)


def test_softmax_vjp_matches_autograd():
    xi = torch.tensor([0.3, -1.2, 0.7, 0.0], dtype=torch.float64, requires_grad=True)
    delta = torch.tensor([0.1, -0.4, 0.25, 0.05], dtype=torch.float64)
    (expected,) = torch.autograd.grad(torch.softmax(xi, 0), xi, grad_outputs=delta)
    assert torch.allclose(softmax_vjp(xi.detach(), delta), expected, rtol=1e-12, atol=0)


def test_adam_updates_match_torch_adam_with_weight_decay():
    """The released code's rule: autograd of softmax fed to torch.optim.Adam(lr=β, weight_decay=γ)."""
    gen = torch.Generator().manual_seed(0)
    losses = [torch.rand(4, generator=gen, dtype=torch.float64) + 0.1 for _ in range(8)]
    m = FAMONextBatch(("a", "b", "c", "d"), FAMOParams(gamma=0.01))
    w = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=BETA, weight_decay=0.01)
    for k, L in enumerate(losses):
        m.step(StepContext(L, k, 0))
        if k:
            delta = losses[k - 1].log() - L.log()
            (w.grad,) = torch.autograd.grad(torch.softmax(w, 0), w, grad_outputs=delta)
            opt.step()
    assert torch.allclose(m.xi_, w.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -0.1])
def test_same_batch_bad_loss_on_either_side_skips_the_update(bad):
    m = FAMO(TASKS)
    one_update(m, PREV, (0.5, bad, 0.25))  # bad after the step
    one_update(m, (0.5, bad, 0.25), NOW)  # bad before it
    assert m.xi_.tolist() == [0.0, 0.0, 0.0]
    assert m.diagnostics() == {"logit_updates": 0.0, "skipped_logit_updates": 2.0}
    one_update(m, PREV, NOW)  # a good step updates again, exactly as by hand
    xi = [-BETA * g / (abs(g) + 1e-8) for g in hand_vjp_at_uniform()]
    assert m.xi_.tolist() == pytest.approx(xi, rel=1e-12)
    assert m.diagnostics() == {"logit_updates": 1.0, "skipped_logit_updates": 2.0}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -0.1])
def test_bad_loss_skips_the_update_and_keeps_weights_finite(bad):
    m = FAMONextBatch(TASKS)
    m.step(ctx(PREV, 0))
    out = m.step(ctx((0.5, bad, 0.25), 1))  # bad in "now"
    assert m.xi_.tolist() == [0.0, 0.0, 0.0] and torch.isfinite(out.weights).all()
    m.step(ctx(PREV, 2))  # bad in "prev"
    assert m.xi_.tolist() == [0.0, 0.0, 0.0]
    assert m.diagnostics() == {"logit_updates": 0.0, "skipped_logit_updates": 2.0}
    m.step(ctx(NOW, 3))  # two good steps in a row: updates again, exactly as by hand
    xi = [-BETA * g / (abs(g) + 1e-8) for g in hand_vjp_at_uniform()]
    assert m.xi_.tolist() == pytest.approx(xi, rel=1e-12)
    assert m.diagnostics() == {"logit_updates": 1.0, "skipped_logit_updates": 2.0}


def test_zero_loss_is_floored_in_the_objective():
    m = FAMO(TASKS)
    c = ctx((0.5, 0.0, 0.25), requires_grad=True)
    out = m.step(c)
    assert math.isfinite(out.objective.item())
    out.objective.backward()
    assert torch.isfinite(c.losses.grad).all() and torch.isfinite(out.weights).all()
    assert sum(out.weights.tolist()) == pytest.approx(1.0)


def test_state_stays_float64_and_weights_follow_the_losses_dtype():
    m = FAMO(TASKS)
    out = m.step(StepContext(torch.tensor(NOW, dtype=torch.float32), 0, 0))
    assert out.weights.dtype == torch.float32 and out.objective.dtype == torch.float32
    assert m.xi_.dtype == torch.float64


@pytest.mark.parametrize(
    "params", [dict(beta=0.0), dict(gamma=-1.0), dict(eps=0.0), dict(beta=float("nan")), dict(logit_optimizer="lbfgs")]
)
def test_bad_hyperparameters_are_user_errors(params):
    with pytest.raises(UserError, match="famo"):
        FAMO(TASKS, FAMOParams(**params))


@pytest.mark.parametrize("name", ["famo", "famo-nextbatch"])
def test_tiny_training_run(tiny_run, toy_bundle, name):
    run = tiny_run(name, epochs=2)
    run.assert_complete()
    steps = 2 * (len(toy_bundle.train) // 16)
    per_step = run.per_step()
    assert sorted(per_step) == list(range(steps)) and all(len(w) == 14 for w in per_step.values())
    assert all(sum(w) == pytest.approx(1.0, rel=1e-5) and min(w) > 0 for w in per_step.values())
    updates = steps if name == "famo" else steps - 1  # the same-batch update follows every step
    assert run.diagnostics == {"logit_updates": updates, "skipped_logit_updates": 0.0}


def test_training_steps_equal_the_authors_loop() -> None:
    """Three steps of `famo` through the trainer equal the authors' CelebA loop written out
    (experiments/celeba/trainer.py L87–106 with methods/weight_methods.py's FAMO): weighted log-loss,
    optimizer step, then under no_grad and still in train mode the same batch's forward, whose
    losses move the logits through autograd of softmax and torch.optim.Adam(lr=β, weight_decay=γ)."""
    from dataclasses import replace

    from mtlbench.config import build_config
    from mtlbench.model import ModelSpec, MultiTaskNet, per_task_losses
    from mtlbench.tasks import TASK_NAMES
    from mtlbench.training import build_optimizer, training_step

    config = replace(
        build_config("smoke"), device="cpu", method="famo", optimizer="adam", weight_decay=0.0, precision="fp32"
    )
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(8, 1, 32, 32, generator=gen), (torch.rand(8, 14, generator=gen) < 0.3).float()) for _ in range(3)
    ]

    torch.manual_seed(0)
    ours = MultiTaskNet(ModelSpec(14, "bce")).train()
    torch.manual_seed(0)
    theirs = MultiTaskNet(ModelSpec(14, "bce")).train()
    method = FAMO(TASK_NAMES)
    optimizer = build_optimizer(config, ours, method)
    for k, (x, y) in enumerate(batches):
        training_step(ours, method, optimizer, x, y, config, k, 0, torch.device("cpu"))

    w = torch.zeros(14, requires_grad=True)
    w_opt = torch.optim.Adam([w], lr=0.025, weight_decay=0.001)
    opt = torch.optim.Adam(theirs.parameters(), lr=config.lr)
    for x, y in batches:
        losses = per_task_losses(theirs(x)[1], y, "bce")
        z = torch.softmax(w, -1).detach()
        d = losses + 1e-8
        c = (z / d).sum().detach()
        opt.zero_grad()
        (d.log() * z / c).sum().backward()
        opt.step()
        with torch.no_grad():
            new = per_task_losses(theirs(x)[1], y, "bce")
        delta = (losses.detach() + 1e-8).log() - (new + 1e-8).log()
        (w.grad,) = torch.autograd.grad(torch.softmax(w, -1), w, grad_outputs=delta)
        w_opt.step()

    assert torch.allclose(method.xi_.float(), w.detach(), rtol=1e-4, atol=1e-7)
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):  # BatchNorm stats included
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-6)


def test_a_task_without_labels_gets_weight_zero_and_its_logit_and_moments_stay():
    m = FAMO(TASKS)
    xi = [0.2, -0.1, 0.3]
    m.xi_.copy_(torch.tensor(xi, dtype=torch.float64))
    labelled = torch.tensor([4, 0, 2])  # task b: no labelled image in the batch, loss 0
    c = StepContext(torch.tensor((0.5, 0.0, 0.25), dtype=torch.float64), 0, 0, labelled=labelled)
    out = m.step(c)
    z = softmax([xi[0], xi[2]])  # FAMO on the present tasks a, c
    w = hand_weights(z, (0.5, 0.25))
    assert out.weights.tolist() == pytest.approx([w[0], 0.0, w[1]], rel=1e-12)
    m.after_update(c, lambda: torch.tensor((0.25, 0.0, 0.25), dtype=torch.float64))  # δ = (ln 2, ·, 0)
    assert m.xi_[1].item() == -0.1 and m.m_[1].item() == 0.0 and m.v_[1].item() == 0.0
    p = m.params
    delta = [math.log(2), 0.0]
    mean = sum(zi * d for zi, d in zip(z, delta))
    grads = [zi * (d - mean) + p.gamma * x for zi, d, x in zip(z, delta, (xi[0], xi[2]))]
    moved = [x - p.beta * g / (abs(g) + 1e-8) for x, g in zip((xi[0], xi[2]), grads)]  # Adam's first step
    assert [m.xi_[0].item(), m.xi_[2].item()] == pytest.approx(moved, rel=1e-9)
    assert m.diagnostics() == {"logit_updates": 1.0, "skipped_logit_updates": 0.0}
    assert torch.isfinite(m.xi_).all() and torch.isfinite(m.v_).all()


def test_next_batch_takes_delta_only_for_tasks_present_at_both_steps():
    m = FAMONextBatch(TASKS)
    first = m.step(StepContext(torch.tensor(PREV, dtype=torch.float64), 0, 0, labelled=torch.tensor([3, 0, 1])))
    assert first.weights[1].item() == 0.0 and torch.isfinite(first.weights).all()
    # δ = (ln 2, ·, 0) for a and c; b had no loss at the first step, so no δ: it stays out of the update
    m.step(StepContext(torch.tensor((0.5, 1.0, 0.5), dtype=torch.float64), 1, 0, labelled=torch.tensor([2, 2, 2])))
    assert m.xi_[1].item() == 0.0 and m.m_[1].item() == 0.0 and m.v_[1].item() == 0.0
    # two tasks at z' = (½, ½): J_zᵀδ = (ln2/4, −ln2/4), so Adam's first step is ∓β
    assert [m.xi_[0].item(), m.xi_[2].item()] == pytest.approx([-BETA, BETA], rel=1e-6)
    assert m.diagnostics() == {"logit_updates": 1.0, "skipped_logit_updates": 0.0}
    m.step(StepContext(torch.tensor(PREV, dtype=torch.float64), 2, 0, labelled=torch.tensor([2, 2, 2])))
    assert m.m_[1].item() != 0.0  # present at both steps now: it moves
