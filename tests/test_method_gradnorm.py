"""GradNorm: the gradient-norm loss, its constant target, renormalization and convergence."""

import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.gradnorm import GradNorm, gradnorm_loss, inverse_training_rates, renormalized
from mtlbench.methods.params import GradNormParams

T = 14
TASKS = [f"t{i}" for i in range(T)]


def unit_rows(p: int = 40, seed: int = 0) -> torch.Tensor:
    j = torch.randn(T, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return j / j.norm(dim=1, keepdim=True)


def test_inverse_training_rates():
    losses = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
    initial = torch.tensor([2.0, 0.5, 0.5], dtype=torch.float64)
    ratio = torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64)  # L̃_t
    assert torch.allclose(inverse_training_rates(losses, initial), ratio / ratio.mean())


def test_loss_value_and_constant_target():
    w = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64, requires_grad=True)
    norms = torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64)
    rates = torch.tensor([1.2, 0.6, 1.2], dtype=torch.float64)
    loss = gradnorm_loss(w, norms, rates, 1.5)
    g = (w * norms).detach()  # [3, 2, 1], mean 2
    target = g.mean() * rates**1.5
    assert loss.item() == pytest.approx((g - target).abs().sum().item())
    (grad,) = torch.autograd.grad(loss, w)
    # no gradient through the target (its mean_j w_j‖∇L_j‖ included): ∂/∂w_t = sign(·)·‖∇L_t‖
    assert torch.allclose(grad, torch.sign(g - target) * norms)


def test_renormalized_sums_to_T_with_a_floor():
    w = renormalized(torch.tensor([-1.0, 2.0, 3.0, 1.0], dtype=torch.float64), 4.0, 1e-3)
    assert w.sum().item() == pytest.approx(4.0) and (w > 0).all()


def test_weights_sum_to_T_after_every_update_and_the_loss_decreases():
    """One task's gradient 10× larger, losses steady (r_t = 1): GradNorm equalizes w_t‖∇L_t‖."""
    j = unit_rows()
    j[0] *= 10
    norms = j.norm(dim=1)
    losses = torch.full((T,), 0.7, dtype=torch.float64)
    m = GradNorm(TASKS)
    history, late = [], []
    for step in range(150):
        used = m.step(StepContext(losses, step, 0, grads=j)).weights
        if step == 0:
            assert used.tolist() == [1.0] * T  # step t trains with w(t), before its update
        assert m.weights_.sum().item() == pytest.approx(T, abs=1e-9)
        history.append(gradnorm_loss(used, norms, torch.ones(T, dtype=torch.float64), 1.5).item())
        if step >= 100:
            late.append(used)
    assert all(b < a for a, b in zip(history[:20], history[1:21]))  # steady descent first
    assert max(history[50:]) < 0.05 * history[0]  # then Adam's fixed-size steps hover near 0
    expected = T * (1 / norms) / (1 / norms).sum()  # w_t‖∇L_t‖ equal for all t, Σ w = T
    assert torch.allclose(torch.stack(late).mean(0), expected, rtol=0.05)


def test_slower_task_gets_more_weight():
    j = unit_rows(seed=1)
    m = GradNorm(TASKS, GradNormParams(alpha=1.5))
    initial = torch.full((T,), 1.0, dtype=torch.float64)
    m.step(StepContext(initial, 0, 0, grads=j))
    later = torch.full((T,), 0.5, dtype=torch.float64)
    later[3] = 0.9  # task 3's loss fell least: r_3 > 1
    for step in range(1, 60):
        m.step(StepContext(later, step, 0, grads=j))
    w = m.weights_.detach()
    assert w[3] == w.max() and w[3] > 1.2


def test_sgd_option_and_bad_params():
    m = GradNorm(TASKS, GradNormParams(optimizer="sgd", lr=0.01))
    assert isinstance(m.optimizer_, torch.optim.SGD)
    assert m.optimizer_groups() == [] and m.weights_changed_per_step()  # w is trained by its own optimizer
    assert GradNorm.needs == "last_shared_layer" and GradNorm.weight_scale == "sum-to-T"
    with pytest.raises(UserError, match="optimizer"):
        GradNorm(TASKS, GradNormParams(optimizer="lbfgs"))
    with pytest.raises(UserError, match="lr"):
        GradNorm(TASKS, GradNormParams(lr=0.0))


def test_weight_lr_is_an_exposed_hyperparameter_with_its_source_named(capsys):
    """The weights' own lr: 0.025 by default (AuxiLearn's GradNorm baseline, cited in the module
    docstring), settable with `--param gradnorm.lr=…`, part of the run's identity, used by w's optimizer."""
    from dataclasses import replace

    from mtlbench.cli import main
    from mtlbench.config import build_config
    from mtlbench.hyperparams import make_params, parse_method_params
    from mtlbench.methods import gradnorm

    assert GradNormParams().lr == 0.025 and GradNorm(TASKS).optimizer_.param_groups[0]["lr"] == 0.025
    assert "AvivNavon/AuxiLearn" in gradnorm.__doc__ and "trainer_baseline.py" in gradnorm.__doc__
    given = parse_method_params(["gradnorm.lr=0.01"], ["gradnorm"])
    m = GradNorm(TASKS, make_params(GradNormParams, given["gradnorm"], "gradnorm"))
    assert m.optimizer_.param_groups[0]["lr"] == 0.01 and isinstance(m.optimizer_, torch.optim.Adam)
    cfg = replace(build_config("smoke"), method="gradnorm")
    assert cfg.hashed_fields()["method_params"]["lr"] == 0.025
    assert replace(cfg, method_params=given["gradnorm"]).config_hash() != cfg.config_hash()
    assert main(["list"]) == 0
    assert "lr = 0.025  # the task weights' own learning rate" in capsys.readouterr().out


def test_nan_and_zero_gradients_never_reach_the_weights():
    j = unit_rows()
    m = GradNorm(TASKS)
    losses = torch.full((T,), 0.7, dtype=torch.float64)
    m.step(StepContext(losses, 0, 0, grads=j))
    before = m.weights_.detach().clone()
    bad = j.clone()
    bad[2, 5] = float("nan")
    bad[7] = 0.0
    out = m.step(StepContext(losses, 1, 0, grads=bad))
    assert torch.isfinite(out.weights).all() and torch.equal(m.weights_.detach(), before)  # update skipped
    nan_loss = losses.clone()
    nan_loss[0] = float("nan")
    m.step(StepContext(nan_loss, 2, 0, grads=j))
    zero = j.clone()
    zero[4] = 0.0
    out = m.step(StepContext(losses, 3, 0, grads=zero))  # a zero gradient is finite: the update goes on
    assert torch.isfinite(m.weights_).all() and m.weights_.sum().item() == pytest.approx(T)
    d = m.diagnostics()
    assert d == {"nonfinite_grad_rows": 1.0, "zero_grad_rows": 2.0, "skipped_weight_updates": 2.0}


def test_end_to_end_run(tiny_run, toy_bundle):
    run = tiny_run("gradnorm")
    run.assert_complete()
    weights, diag = run.weights, run.diagnostics
    steps = {r["step"] for r in weights if r["step"] >= 0}
    assert len(steps) == len(toy_bundle.train.labels) // 16  # logged every step, and the epoch mean
    for step in steps | {-1}:
        values = [r["weight"] for r in weights if r["step"] == step]
        assert len(values) == 14 and sum(values) == pytest.approx(14)
    assert diag["skipped_weight_updates"] == 0


def test_a_task_without_labels_keeps_its_weight_and_its_initial_loss_waits_for_its_first_label():
    m = GradNorm(("a", "b", "c"))
    grads = unit_rows()[:3] * torch.tensor([[1.0], [2.0], [0.5]])
    absent = grads.clone()
    absent[2] = 0.0  # t2: no labelled image in the first batch, so no loss and no gradient
    losses = torch.tensor([0.5, 0.8, 0.0], dtype=torch.float64)
    m.step(StepContext(losses, 0, 0, absent, labelled=torch.tensor([2, 2, 0])))
    assert m.initial_losses_[:2].tolist() == [0.5, 0.8] and torch.isnan(m.initial_losses_[2])
    alone = GradNorm(("a", "b"))  # the same step on the present tasks alone (their weights hold 2 of T = 3)
    alone.step(StepContext(losses[:2], 0, 0, grads[:2]))
    assert m.weights_.tolist() == pytest.approx([*alone.weights_.tolist(), 1.0], rel=1e-12)
    assert m.weights_[2].item() == 1.0 and m.weights_.sum().item() == pytest.approx(3.0)
    state = m.optimizer_.state[m.weights_]
    assert state["exp_avg"][2].item() == 0.0 and state["exp_avg_sq"][2].item() == 0.0  # its moments untouched
    assert m.diagnostics()["zero_grad_rows"] == 1.0
    m.step(
        StepContext(torch.tensor([0.4, 0.8, 0.6], dtype=torch.float64), 1, 0, grads, labelled=torch.tensor([2, 2, 2]))
    )
    assert m.initial_losses_.tolist() == [0.5, 0.8, 0.6]  # L_t(0) of t2 at its first labelled step
    assert m.weights_.sum().item() == pytest.approx(3.0)
