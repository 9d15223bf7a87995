"""DB-MTL: log-loss gradients, the EMA with β/k^σ, max-norm balancing, the guard, state, the authors' loop."""

import io
import math

import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.db_mtl import DBMTL, ema_factor
from mtlbench.methods.params import DBMTLParams
from mtlbench.model import per_task_losses
from mtlbench.registry import METHODS
from tests.authors_loop import twin_run

TASKS = ("a", "b", "c")


def problem(seed: int, p: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Losses (3,) and per-task gradients (3, p) of very different scales."""
    gen = torch.Generator().manual_seed(seed)
    grads = torch.randn(3, p, generator=gen, dtype=torch.float64) * torch.tensor([[0.01], [1.0], [30.0]])
    return torch.rand(3, generator=gen, dtype=torch.float64) + 0.05, grads


def ctx(losses: torch.Tensor, grads: torch.Tensor, k: int = 0) -> StepContext:
    return StepContext(losses, k, 0, grads)


def test_first_step_is_the_scaled_log_loss_gradient_and_every_balanced_gradient_has_the_max_norm():
    m = DBMTL(TASKS)
    losses, grads = problem(0)
    out = m.step(ctx(losses, grads))
    ema = (1 - 0.9) * grads / (losses[:, None] + 1e-8)  # ĝ from 0: (1 − β)·∇log(L + ε)
    assert torch.allclose(m.ema_, ema, rtol=1e-12)
    norms = ema.norm(dim=1)
    balanced = out.weights[:, None] * ema
    assert balanced.norm(dim=1).tolist() == pytest.approx([norms.max().item()] * 3, rel=1e-5)  # to ε = 1e-8
    assert out.weights.tolist() == pytest.approx((norms.max() / (norms + 1e-8)).tolist(), rel=1e-12)
    assert torch.allclose(out.shared_grad, balanced.sum(0), rtol=1e-12)
    assert min(out.weights.tolist()) == pytest.approx(1.0, rel=1e-6) and out.objective is None


@pytest.mark.parametrize("beta, sigma", [(0.9, 0.0), (0.9, 0.5), (0.5, 1.0), (0.0, 0.0)])
def test_ema_with_a_decaying_factor_by_hand(beta, sigma):
    m = DBMTL(TASKS, DBMTLParams(beta=beta, beta_sigma=sigma))
    ema = torch.zeros(3, 20, dtype=torch.float64)
    for k, seed in enumerate((1, 2, 3), start=1):
        losses, grads = problem(seed)
        b = beta / k**sigma
        ema = b * ema + (1 - b) * grads / (losses[:, None] + 1e-8)
        out = m.step(ctx(losses, grads, k - 1))
        assert torch.allclose(m.ema_, ema, rtol=1e-12)
        norms = ema.norm(dim=1)
        balanced = (out.weights[:, None] * ema).norm(dim=1)
        assert balanced.tolist() == pytest.approx((norms.max() * norms / (norms + 1e-8)).tolist(), rel=1e-12)
        assert balanced.tolist() == pytest.approx([norms.max().item()] * 3, rel=1e-5)  # the max norm, to ε
    assert ema_factor(beta, sigma, 4) == pytest.approx(beta / 4**sigma)


def test_the_log_transform_makes_each_task_scale_free():
    """A task whose loss is c times larger has a c times larger gradient; ∇log(cL) = ∇log L: the same step."""
    c = torch.tensor([1.0, 1000.0, 1.0], dtype=torch.float64)
    plain, scaled = DBMTL(TASKS), DBMTL(TASKS)
    for k, seed in enumerate((5, 6)):
        losses, grads = problem(seed)
        a = plain.step(ctx(losses, grads, k))
        b = scaled.step(ctx(losses * c, grads * c[:, None], k))
        assert torch.allclose(a.shared_grad, b.shared_grad, rtol=1e-5)
        assert torch.allclose(a.weights, b.weights, rtol=1e-5)


def test_identical_log_gradients_give_equal_weights():
    grad = torch.randn(1, 20, dtype=torch.float64).repeat(3, 1)
    losses = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    out = DBMTL(TASKS).step(ctx(losses, grad))
    assert out.weights.tolist() == pytest.approx([1.0] * 3, rel=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_row_keeps_its_ema_and_is_counted(bad):
    m = DBMTL(TASKS)
    losses, grads = problem(7)
    m.step(ctx(losses, grads))
    before = m.ema_.clone()
    losses2, grads2 = problem(8)
    grads2[1, 3] = bad
    out = m.step(ctx(losses2, grads2, 1))
    assert torch.equal(m.ema_[1], before[1])
    expected = 0.9 * before[[0, 2]] + 0.1 * grads2[[0, 2]] / (losses2[[0, 2], None] + 1e-8)
    assert torch.allclose(m.ema_[[0, 2]], expected, rtol=1e-12)
    assert torch.isfinite(out.shared_grad).all() and torch.isfinite(out.weights).all()
    bad_loss = losses2.clone()
    bad_loss[2] = float("nan")
    m.step(ctx(bad_loss, problem(9)[1], 2))
    assert m.diagnostics() == {"nonfinite_task_rows_skipped": 2.0}


def test_ema_is_a_buffer_and_a_checkpoint_continues_identically():
    m = DBMTL(TASKS, DBMTLParams(beta_sigma=0.5))
    for k, seed in enumerate((10, 11)):
        m.step(ctx(*problem(seed), k))
    assert "ema_" in dict(m.named_buffers()) and m.ema_.shape == (3, 20)
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    restored = DBMTL(TASKS, DBMTLParams(beta_sigma=0.5))
    assert restored.ema_.numel() == 0  # sized at the first step, or by the checkpoint
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.steps_ == 2
    for k, seed in enumerate((12, 13), start=2):
        a, b = m.step(ctx(*problem(seed), k)), restored.step(ctx(*problem(seed), k))
        assert torch.equal(a.shared_grad, b.shared_grad) and torch.equal(a.weights, b.weights)


def test_weights_follow_the_losses_dtype_and_the_ema_the_gradients():
    losses, grads = problem(14)
    out = DBMTL(TASKS).step(ctx(losses.float(), grads.float()))
    assert out.weights.dtype == torch.float32 and out.shared_grad.dtype == torch.float32


def test_registration_and_defaults():
    cls = METHODS.get("db-mtl")
    assert cls is DBMTL and cls.needs == "shared_params" and cls.weight_scale == "none" and not cls.syncs_host
    assert DBMTLParams() == DBMTLParams(beta=0.9, beta_sigma=0.0)
    with pytest.raises(ValueError, match="ctx.grads"):
        DBMTL(TASKS).step(StepContext(torch.ones(3), 0, 0))


@pytest.mark.parametrize(
    "params", [dict(beta=1.0), dict(beta=-0.1), dict(beta=float("nan")), dict(beta_sigma=-1.0), dict(beta="0.9")]
)
def test_bad_hyperparameters_are_user_errors(params):
    with pytest.raises(UserError, match="db-mtl"):
        DBMTL(TASKS, DBMTLParams(**params))


def test_training_steps_equal_the_authors_loop():
    """Four steps through the trainer equal LibMTL's DB_MTL.backward written out (gradients of log(L + 1e-8)
    with respect to the shared parameters, EMA with β/k^σ, α = max‖ĝ‖/(‖ĝ‖ + 1e-8), shared gradient Σ α ĝ),
    with the harness's head gradients ∇L_t (LibMTL's heads get ∇log(L_t + 1e-8): the named deviation)."""
    run = twin_run(DBMTL, steps=4)
    method = DBMTL(tuple("abcde"), DBMTLParams(beta=0.8, beta_sigma=0.5))
    run.train_ours(method)

    batches, theirs, opt = run.batches, run.theirs, run.their_optimizer()
    shared, heads = theirs.shared_parameters(), theirs.head_parameters()
    buffer = None
    for k, (x, y) in enumerate(batches, start=1):
        losses = per_task_losses(theirs(x)[1], y, "bce")
        rows = []
        for t in range(5):
            g = torch.autograd.grad(torch.log(losses[t] + 1e-8), shared, retain_graph=True)
            rows.append(torch.cat([v.reshape(-1) for v in g]))
        batch_grads = torch.stack(rows)
        buffer = torch.zeros_like(batch_grads) if buffer is None else buffer
        buffer = batch_grads + (0.8 / k**0.5) * (buffer - batch_grads)
        u = buffer.norm(dim=-1)
        alpha = u.max() / (u + 1e-8)
        new = sum(alpha[i] * buffer[i] for i in range(5))
        opt.zero_grad()
        for p, g in zip(heads, torch.autograd.grad(losses.sum(), heads)):
            p.grad = g
        offset = 0
        for p in shared:
            p.grad = new[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        opt.step()

    assert torch.allclose(method.ema_, buffer, rtol=1e-5, atol=1e-7)
    run.assert_same_models()


def test_tiny_training_run(tiny_run, toy_bundle):
    run = tiny_run("db-mtl")
    run.assert_complete()
    run.per_step_epoch_means(len(toy_bundle.train) // 16)
    for weights in run.per_step().values():  # α ≥ 1, the largest-norm task's 1
        assert min(weights) == pytest.approx(1.0, rel=1e-5) and all(math.isfinite(w) for w in weights)
    assert run.diagnostics == {"nonfinite_task_rows_skipped": 0.0}


def test_a_task_without_labels_keeps_its_ema_and_is_left_out_of_the_update():
    m = DBMTL(TASKS)
    losses, grads = problem(0)
    m.step(ctx(losses, grads))
    kept = m.ema_[2].clone()
    absent = torch.cat([grads[:2], torch.zeros(1, grads.shape[1], dtype=grads.dtype)])  # c: no label, no gradient
    out = m.step(StepContext(torch.cat([losses[:2], torch.zeros(1, dtype=losses.dtype)]), 1, 0, absent,
                             labelled=torch.tensor([4, 2, 0])))  # fmt: skip
    assert torch.equal(m.ema_[2], kept)  # not decayed toward its zero gradient
    ema = m.ema_[:2]  # the present tasks: 0.9·ĝ + 0.1·g/(L + ε)
    norms = ema.norm(dim=1)
    assert out.weights.tolist() == pytest.approx([*(norms.max() / (norms + 1e-8)).tolist(), 0.0], rel=1e-12)
    assert torch.allclose(out.shared_grad, out.weights[:2] @ ema, rtol=1e-12)
    assert m.diagnostics() == {"nonfinite_task_rows_skipped": 0.0}
