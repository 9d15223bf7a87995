"""Uncertainty weighting: objective, its gradients, the guard, and one tiny training run."""

import math

import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.uncertainty import UncertaintyWeighting, uncertainty_objective
from mtlbench.methods.params import UncertaintyParams
from tests.learned_scales import assert_starts_as_equal_weighting, set_parameter, train_alone

TASKS = ("a", "b", "c")
LOSSES = (0.5, 2.0, 1.0)
LOG_VARS = (0.0, 1.0, -0.5)


def method_with(log_vars=LOG_VARS, **params) -> UncertaintyWeighting:
    return set_parameter(UncertaintyWeighting(TASKS, UncertaintyParams(**params)), "log_var_", log_vars)


def test_starts_as_equal_weighting_with_learnable_log_variances():
    assert_starts_as_equal_weighting(UncertaintyWeighting(TASKS), "log_var_", LOSSES)
    assert UncertaintyWeighting.needs == "losses"


def test_objective_value_and_gradients_by_hand():
    m = method_with()
    losses = torch.tensor(LOSSES, requires_grad=True)
    out = m.step(StepContext(losses, 0, 0))
    expected = sum(math.exp(-s) * L + s for L, s in zip(LOSSES, LOG_VARS))
    assert out.objective.item() == pytest.approx(expected, rel=1e-6)
    out.objective.backward()
    # ∂/∂s_t = −exp(−s_t)·L_t + 1;  ∂/∂L_t = exp(−s_t) = the logged weight
    expected_grad = [-math.exp(-s) * L + 1 for L, s in zip(LOSSES, LOG_VARS)]
    assert m.log_var_.grad.tolist() == pytest.approx(expected_grad, rel=1e-6)
    assert losses.grad.tolist() == pytest.approx([math.exp(-s) for s in LOG_VARS], rel=1e-6)
    assert out.weights.tolist() == pytest.approx([math.exp(-s) for s in LOG_VARS], rel=1e-6)
    assert not out.weights.requires_grad


def test_classification_likelihood_form_has_its_optimum_at_log_2L():
    s = torch.tensor([math.log(2 * L) for L in LOSSES], requires_grad=True)
    uncertainty_objective(torch.tensor(LOSSES), s, regularizer=0.5).backward()
    assert s.grad.abs().max().item() < 1e-6  # −exp(−s)L + ½ = 0 at s = log 2L


def test_rho_half_from_the_command_line_reaches_the_method(capsys):
    """`--param uncertainty.regularizer=0.5` (the paper's classification likelihood) is parsed,
    is a cell of its own, and is the ρ the method's objective uses; the default stays 1, and
    `mtlbench list` says what ρ = 0.5 means."""
    from dataclasses import replace

    from mtlbench.cli import main
    from mtlbench.config import build_config
    from mtlbench.hyperparams import make_params, parse_method_params

    assert UncertaintyParams().regularizer == 1.0
    given = parse_method_params(["uncertainty.regularizer=0.5"], ["uncertainty"])
    assert given == {"uncertainty": {"regularizer": 0.5}}
    params = make_params(UncertaintyParams, given["uncertainty"], "uncertainty")
    m = UncertaintyWeighting(TASKS, params)
    with torch.no_grad():
        m.log_var_.copy_(torch.tensor(LOG_VARS))
    m.step(StepContext(torch.tensor(LOSSES), 0, 0)).objective.backward()
    assert m.log_var_.grad.tolist() == pytest.approx([-math.exp(-s) * L + 0.5 for L, s in zip(LOSSES, LOG_VARS)])
    cfg = replace(build_config("smoke"), method="uncertainty")
    assert cfg.hashed_fields()["method_params"]["regularizer"] == 1.0
    assert replace(cfg, method_params=given["uncertainty"]).config_hash() != cfg.config_hash()
    assert main(["list"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "regularizer = " in x]
    assert "regularizer = 1.0" in line and "0.5" in line and "classification likelihood" in line


def test_training_s_alone_reaches_log_of_the_loss():
    m = UncertaintyWeighting(TASKS)
    weights = train_alone(m, LOSSES, steps=600)
    assert m.log_var_.tolist() == pytest.approx([math.log(L) for L in LOSSES], abs=1e-4)
    assert weights.tolist() == pytest.approx([1 / L for L in LOSSES], rel=1e-3)  # ∝ 1/L at equilibrium


def test_non_finite_loss_is_skipped_and_counted_without_nan():
    m = method_with()
    losses = torch.tensor([0.5, float("nan"), float("inf")], requires_grad=True)
    out = m.step(StepContext(losses, 0, 0))
    assert out.objective.item() == pytest.approx(math.exp(0.0) * 0.5 + 0.0)
    out.objective.backward()
    assert torch.isfinite(m.log_var_.grad).all() and m.log_var_.grad[1:].tolist() == [0.0, 0.0]
    assert torch.isfinite(losses.grad).all() and losses.grad[1:].tolist() == [0.0, 0.0]
    assert torch.isfinite(out.weights).all()
    assert m.diagnostics() == {"nonfinite_task_losses_skipped": 2.0}


def test_to_keeps_the_parameter_object():
    m = UncertaintyWeighting(TASKS)
    p = m.log_var_
    assert next(m.to(torch.device("cpu")).parameters()) is p


@pytest.mark.parametrize(
    "params", [dict(regularizer=0.0), dict(regularizer=float("inf")), dict(init_log_var=float("nan"))]
)
def test_bad_hyperparameters_are_user_errors(params):
    with pytest.raises(UserError, match="uncertainty"):
        UncertaintyWeighting(TASKS, UncertaintyParams(**params))


def test_tiny_training_run(tiny_run, toy_bundle):
    run = tiny_run("uncertainty", epochs=2)
    run.assert_complete()
    steps = 2 * (len(toy_bundle.train) // 16)
    rows = [r for r in run.weights if r["step"] >= 0]
    assert len(rows) == 14 * steps  # logged per step: s is learned
    assert all(math.isfinite(r["weight"]) and r["weight"] > 0 for r in rows)
    assert any(r["weight"] != 1.0 for r in rows if r["step"] == steps - 1)  # s moved
    assert list(run.diagnostics.items()) == [("nonfinite_task_losses_skipped", 0.0)]


def test_a_task_without_labels_is_left_out_and_its_log_variance_gets_no_gradient():
    m = method_with()  # s = (0, 1, −0.5), ρ = 1
    losses = torch.tensor((0.5, 0.0, 1.0), requires_grad=True)  # task b: no labelled image in the batch
    out = m.step(StepContext(losses, 0, 0, labelled=torch.tensor([4, 0, 2])))
    assert out.objective.item() == pytest.approx(0.5 + 0.0 + math.exp(0.5) * 1.0 - 0.5, rel=1e-6)
    out.objective.backward()
    assert m.log_var_.grad.tolist() == pytest.approx([-0.5 + 1.0, 0.0, -math.exp(0.5) + 1.0], rel=1e-6)
    assert m.log_var_.grad[1].item() == 0.0  # without the mask: ρ = 1 would pull s_b down every such step
    assert out.weights.tolist() == pytest.approx([1.0, math.exp(-1.0), math.exp(0.5)], rel=1e-6)
    assert m.diagnostics() == {"nonfinite_task_losses_skipped": 0.0}
