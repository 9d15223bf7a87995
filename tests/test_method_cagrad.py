"""CAGrad: the update solves its primal and dual problems (checked with scipy), and its scale."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.cagrad import CAGrad, cagrad_coefficients, solve_cagrad_dual
from mtlbench.methods.params import CAGradParams
from tests.gramian_cases import end_to_end_weights, ones, step_with_bad_rows


def dual_objective(j: np.ndarray, c: float, w: np.ndarray) -> float:
    """g_wᵀg_0 + c‖g_0‖‖g_w‖."""
    g0, gw = j.mean(0), w @ j
    return float(gw @ g0 + c * np.linalg.norm(g0) * np.linalg.norm(gw))


def scipy_dual(j: np.ndarray, c: float) -> np.ndarray:
    """Reference dual solution: SLSQP over the simplex from several starts."""
    t = j.shape[0]
    best = None
    for start in [np.full(t, 1 / t)] + list(np.eye(t)):
        res = minimize(
            lambda w: dual_objective(j, c, w),
            start,
            method="SLSQP",
            bounds=[(0, 1)] * t,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
            options={"ftol": 1e-15, "maxiter": 2000},
        )
        if best is None or dual_objective(j, c, res.x) < dual_objective(j, c, best):
            best = res.x
    return best


def scipy_primal_value(j: np.ndarray, c: float) -> float:
    """Reference primal value: max_d min_i g_iᵀd s.t. ‖d − g_0‖ ≤ c‖g_0‖ (SLSQP on (d, t))."""
    t, p = j.shape
    g0 = j.mean(0)
    rho = c * np.linalg.norm(g0)
    cons = [
        {"type": "ineq", "fun": lambda x: j @ x[:p] - x[p], "jac": lambda x: np.hstack([j, -np.ones((t, 1))])},
        {
            "type": "ineq",
            "fun": lambda x: rho**2 - np.sum((x[:p] - g0) ** 2),
            "jac": lambda x: np.append(-2 * (x[:p] - g0), 0),
        },
    ]
    res = minimize(
        lambda x: -x[p],
        np.append(g0, (j @ g0).min()),
        jac=lambda x: np.append(np.zeros(p), -1),
        constraints=cons,
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 2000},
    )
    return float((j @ res.x[:p]).min())


def cases():
    rng = np.random.default_rng(11)
    out = []
    for t, p in [(2, 5), (3, 20), (6, 30), (14, 40), (14, 16)]:
        out.append((f"random-{t}x{p}", rng.normal(size=(t, p))))
        out.append((f"correlated-{t}x{p}", rng.normal(size=p) + 0.4 * rng.normal(size=(t, p))))
        out.append((f"scaled-{t}x{p}", rng.normal(size=(t, p)) * rng.lognormal(0, 1.5, size=(t, 1))))
    return out


CASES = cases()


@pytest.mark.parametrize("c", [0.4, 0.9])
@pytest.mark.parametrize("name, j", CASES, ids=[n for n, _ in CASES])
def test_update_solves_the_primal_and_the_dual(name, j, c):
    scale = np.linalg.norm(j, axis=1).max() ** 2
    dual = solve_cagrad_dual(torch.from_numpy(j @ j.T), c)
    assert dual.converged and not dual.pareto_stationary
    w = dual.w.numpy()
    assert np.all(w >= 0) and w.sum() == pytest.approx(1, abs=1e-12)
    # dual: no worse than scipy's minimizer
    assert dual_objective(j, c, w) <= dual_objective(j, c, scipy_dual(j, c)) + 1e-7 * scale
    # d = g_0 + (c‖g_0‖/‖g_w‖) g_w ...
    g0, gw = j.mean(0), w @ j
    d = cagrad_coefficients(torch.from_numpy(j @ j.T), c).numpy() @ j
    assert np.allclose(d, g0 + c * np.linalg.norm(g0) / np.linalg.norm(gw) * gw, atol=1e-6 * np.sqrt(scale))
    # ... is feasible and maximizes the worst task's inner product (strong duality: = dual value)
    assert np.linalg.norm(d - g0) <= c * np.linalg.norm(g0) * (1 + 1e-9)
    worst = (j @ d).min()
    assert worst >= scipy_primal_value(j, c) - 1e-6 * scale
    assert worst == pytest.approx(dual_objective(j, c, w), abs=1e-6 * scale)


def test_c_zero_gives_the_average_gradient():
    j = torch.randn(5, 12, dtype=torch.float64)
    coef = cagrad_coefficients(j @ j.T, 0.0)
    assert torch.allclose(coef @ j, j.mean(0))
    out = CAGrad(list("abcde"), CAGradParams(c=0.0)).step(StepContext(ones(5), 0, 0, grads=j))
    assert torch.allclose(out.weights, torch.ones(5, dtype=torch.float64))  # T·g_0 = EW's Σ g_t
    assert torch.allclose(out.shared_grad, j.sum(0))


@pytest.mark.parametrize("rescale, factor", [("1+c^2", 1 + 0.4**2), ("1+c", 1.4), ("none", 1.0)])
def test_weights_are_T_alpha_over_the_rescale(rescale, factor):
    j = torch.randn(4, 20, dtype=torch.float64)
    out = CAGrad(list("abcd"), CAGradParams(rescale=rescale)).step(StepContext(ones(4), 0, 0, grads=j))
    alpha = cagrad_coefficients(j @ j.T, 0.4)
    assert torch.allclose(out.weights, 4 * alpha / factor)
    assert torch.allclose(out.shared_grad, out.weights @ j)
    dual = solve_cagrad_dual(j @ j.T, 0.4)
    assert out.weights.sum().item() == pytest.approx(4 * (1 + dual.lam) / factor)


def test_identical_and_opposite_gradients():
    g = torch.randn(10, dtype=torch.float64)
    same = g.repeat(3, 1)
    assert torch.allclose(cagrad_coefficients(same @ same.T, 0.4) @ same, 1.4 * g)  # λ = c: d = (1 + c) g
    opposite = torch.stack([g, -g])
    coef = cagrad_coefficients(opposite @ opposite.T, 0.4)  # g_0 = 0: d = 0
    assert torch.isfinite(coef).all() and torch.allclose(coef @ opposite, torch.zeros(10, dtype=torch.float64))


@pytest.mark.parametrize("stationary", [False, True])
def test_zero_in_the_hull(stationary):
    """0 in the hull: the optimum has g_w ≠ 0 (value < 0) or is the kink g_w = 0 (value 0, counted)."""
    if stationary:  # g_1 = −g_2 ⊥ g_3: any d has min_i g_iᵀd ≤ 0, reached only at g_w = 0
        j = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    else:
        j = torch.tensor([[1.0, 0.0], [-1.0, 0.2], [0.3, -1.0], [0.2, 0.1]], dtype=torch.float64)
    t = j.shape[0]
    m = CAGrad([str(i) for i in range(t)])
    out = m.step(StepContext(ones(t), 0, 0, grads=j))
    assert torch.isfinite(out.shared_grad).all()
    d = out.shared_grad / t * (1 + 0.4**2)
    g0 = j.mean(0)
    assert (d - g0).norm() <= 0.4 * g0.norm() * (1 + 1e-9)
    worst = (j @ d).min().item()
    assert worst == pytest.approx(scipy_primal_value(j.numpy(), 0.4), abs=1e-4)
    assert m.diagnostics()["pareto_stationary_steps"] == int(stationary)


def test_nan_and_zero_gradients_are_left_out_and_counted():
    j = torch.randn(5, 16, dtype=torch.float64)
    m = CAGrad(list("abcde"))
    out, keep = step_with_bad_rows(m, j, nonfinite=0, zero=3, bad=float("inf"))
    sub = j[keep]
    assert torch.allclose(out.weights[keep], 3 * cagrad_coefficients(sub @ sub.T, 0.4) / 1.16)
    j[:] = float("nan")
    out = m.step(StepContext(ones(5), 1, 0, grads=j))
    assert out.weights.abs().sum() == 0 and out.shared_grad.abs().sum() == 0
    assert m.diagnostics()["no_usable_task_steps"] == 1


def test_bad_params():
    with pytest.raises(UserError, match="rescale"):
        CAGrad(list("ab"), CAGradParams(rescale="2"))
    with pytest.raises(UserError, match="c must be"):
        CAGrad(list("ab"), CAGradParams(c=-1.0))


def test_end_to_end_run(tiny_run, toy_bundle):
    assert min(end_to_end_weights(tiny_run("cagrad"), toy_bundle, "solver_not_converged_steps")) > 0


def test_a_task_without_labels_is_left_out_as_on_the_present_tasks_alone():
    """Missing labels: the absent task's zero gradient row gets weight 0 and is counted; the rest is the method on
    the present tasks (tests/gramian_cases.py)."""
    from tests.gramian_cases import assert_absent_task_left_out

    assert_absent_task_left_out(CAGrad, None)
