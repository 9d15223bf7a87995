"""Nash-MTL: the solver satisfies the paper's condition G α = 1/α, closed forms, the authors' clipping and
reuse of α, failure handling, and TorchJD's port of the authors' cvxpy solver."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.nash_mtl import NashMTL, clip_factor, nash_bargaining_weights
from mtlbench.methods.params.gramian_weighting import NashMTLParams
from mtlbench.registry import METHODS
from tests.gramian_cases import CASES, NAMES, end_to_end_weights, ones, step_with_bad_rows


def solve(j: np.ndarray) -> np.ndarray:
    """α for the Jacobian j (checked to be found)."""
    alpha, ok = nash_bargaining_weights(torch.from_numpy(j @ j.T))
    assert ok
    return alpha.numpy()


def assert_bargaining_condition(j: np.ndarray, alpha: np.ndarray) -> None:
    """α > 0 and α_t (Gα)_t = 1 for every t (the paper's G α = 1/α), hence ‖Σ α_t g_t‖² = T."""
    gram = j @ j.T
    assert np.all(alpha > 0)
    assert alpha * (gram @ alpha) == pytest.approx(np.ones(len(alpha)), abs=1e-9)
    assert np.linalg.norm(alpha @ j) ** 2 == pytest.approx(len(alpha), rel=1e-9)


@pytest.mark.parametrize("t, p, seed", [(2, 5, 0), (3, 20, 1), (6, 30, 2), (14, 40, 3), (14, 14, 4), (14, 200, 5)])
def test_solution_satisfies_the_papers_condition(t, p, seed):
    rng = np.random.default_rng(seed)
    j = rng.normal(size=(t, p)) * rng.lognormal(0, 1.5, size=(t, 1)) + rng.normal(size=p)
    assert_bargaining_condition(j, solve(j))


@pytest.mark.parametrize("name", NAMES)
def test_shared_cases_satisfy_the_condition(name):
    """Rank-deficient ones too: the solution exists while no non-negative combination of the rows vanishes."""
    assert_bargaining_condition(CASES[name], solve(CASES[name]))


def test_orthogonal_gradients_closed_form():
    """G diagonal: α_t ‖g_t‖² = 1/α_t, so α_t = 1/‖g_t‖."""
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(20, 4)))
    norms = np.array([0.01, 1.0, 3.0, 250.0])
    alpha = solve(norms[:, None] * q.T)
    assert alpha == pytest.approx(1 / norms, rel=1e-10)


def test_identical_gradients_closed_form():
    """g_t = g: ‖g‖² (Σα) = 1/α_t, so α_t = 1/(‖g‖√T)."""
    g = np.random.default_rng(2).normal(size=9)
    alpha = solve(np.tile(g, (5, 1)))
    assert alpha == pytest.approx(np.full(5, 1 / (np.linalg.norm(g) * math.sqrt(5))), rel=1e-10)


@pytest.mark.parametrize("cos", [0.8, 0.0, -0.6, -0.99])
def test_two_tasks_by_hand(cos):
    """α_1²‖g_1‖² + α_1α_2 c = 1 = α_2²‖g_2‖² + α_1α_2 c gives α_t = 1 / (‖g_t‖ √(1 + cos θ))."""
    n1, n2 = 2.0, 0.3
    g1 = n1 * np.array([1.0, 0.0])
    g2 = n2 * np.array([cos, math.sqrt(1 - cos**2)])
    alpha = solve(np.stack([g1, g2]))
    assert alpha == pytest.approx([1 / (n1 * math.sqrt(1 + cos)), 1 / (n2 * math.sqrt(1 + cos))], rel=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_solution_minimizes_the_convex_potential(seed):
    """Independent check: scipy's L-BFGS-B on f(α) = ½αᵀGα − Σ log α finds the same point."""
    rng = np.random.default_rng(seed)
    j = rng.normal(size=(6, 15)) + 0.5 * rng.normal(size=15)
    gram = j @ j.T
    res = minimize(
        lambda a: 0.5 * a @ gram @ a - np.log(a).sum(),
        np.ones(6),
        jac=lambda a: gram @ a - 1 / a,
        method="L-BFGS-B",
        bounds=[(1e-9, None)] * 6,
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000},
    )
    assert solve(j) == pytest.approx(res.x, rel=1e-5)


def test_weights_are_alpha_clipped_to_max_norm():
    """The authors clip ‖Σα_t g_t‖ (= √T at the solution) to max_norm; 0 turns it off."""
    rng = np.random.default_rng(3)
    j = torch.from_numpy(rng.normal(size=(4, 30)) + rng.normal(size=30))
    alpha = nash_bargaining_weights(j @ j.T)[0]
    for max_norm, factor in [(1.0, 1 / 2.0), (0.5, 0.5 / 2.0), (0.0, 1.0), (5.0, 1.0)]:
        out = NashMTL(list("abcd"), NashMTLParams(max_norm=max_norm)).step(StepContext(ones(4), 0, 0, grads=j))
        assert torch.allclose(out.weights, factor * alpha, rtol=1e-10)
        assert torch.allclose(out.shared_grad, out.weights @ j)
        assert out.shared_grad.norm().item() == pytest.approx(min(2.0, max_norm or 2.0), rel=1e-8)
    assert clip_factor(j @ j.T, alpha, 1.0) == pytest.approx(0.5, rel=1e-10)
    assert NashMTL.weight_scale == "none"


def test_alpha_is_reused_between_updates():
    """update_weights_every = 3: α solved at steps 0 and 3, reused (and re-clipped) at 1, 2 and 4."""
    rng = np.random.default_rng(4)
    m = NashMTL(list("abc"), NashMTLParams(update_weights_every=3, max_norm=0.0))
    jacobians = [torch.from_numpy(rng.normal(size=(3, 12)) + rng.normal(size=12)) for _ in range(5)]
    outs = [m.step(StepContext(ones(3), k, 0, grads=j)) for k, j in enumerate(jacobians)]
    first, second = (nash_bargaining_weights(jacobians[k] @ jacobians[k].T)[0] for k in (0, 3))
    for k, expected in [(0, first), (1, first), (2, first), (3, second), (4, second)]:
        assert torch.allclose(outs[k].weights, expected, rtol=1e-12)
    assert torch.allclose(m.alpha, second)


def test_pareto_stationary_gradients_fail_and_reuse_the_previous_alpha():
    """g and −g: a positive combination is 0, the bargaining problem has no solution. The step is
    counted and uses the previous α (1 at the start, as in the authors' code), then clipped."""
    g = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    other = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    stuck = torch.stack([g, -g])
    assert not nash_bargaining_weights(stuck @ stuck.T)[1]
    m = NashMTL(list("ab"))
    out = m.step(StepContext(ones(2), 0, 0, grads=stuck))
    assert out.weights.tolist() == [1.0, 1.0] and out.shared_grad.abs().max() < 1e-12  # α = 1: g − g
    good = torch.stack([g, other])
    solved = m.step(StepContext(ones(2), 1, 0, grads=good)).weights
    nearly = torch.stack([g, -g + 1e-9 * other])  # α would exceed the cancellation bound
    again = m.step(StepContext(ones(2), 2, 0, grads=nearly)).weights
    assert torch.allclose(again, m.alpha * clip_factor(nearly @ nearly.T, m.alpha, 1.0), rtol=1e-12)
    assert torch.allclose(m.alpha, nash_bargaining_weights(good @ good.T)[0]) and torch.isfinite(solved).all()
    assert m.diagnostics()["solver_failed_steps"] == 2


def test_nan_and_zero_gradients_are_left_out_and_counted():
    j = torch.randn(5, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(7)) + 1.0
    m = NashMTL(list("abcde"), NashMTLParams(max_norm=0.0))
    out, keep = step_with_bad_rows(m, j, nonfinite=0, zero=3, bad=float("inf"))
    sub = j[keep]
    assert torch.allclose(out.weights[keep], nash_bargaining_weights(sub @ sub.T)[0])
    assert torch.allclose(m.alpha[keep], out.weights[keep]) and m.alpha[[0, 3]].abs().sum() == 0


def test_registration_and_bad_params():
    assert METHODS.get("nash-mtl") is NashMTL and NashMTL.needs == "shared_params"
    assert NashMTLParams() == NashMTLParams(max_norm=1.0, update_weights_every=1)  # the authors' defaults
    with pytest.raises(UserError, match="max_norm"):
        NashMTL(list("ab"), NashMTLParams(max_norm=-1.0))
    with pytest.raises(UserError, match="update_weights_every"):
        NashMTL(list("ab"), NashMTLParams(update_weights_every=0))
    with pytest.raises(UserError, match="update_weights_every"):
        NashMTL.make_params({"update_weights_every": 1.5})


@pytest.mark.filterwarnings("ignore:You are solving a parameterized problem that is not DPP")
@pytest.mark.parametrize("name", NAMES)
def test_matches_torchjd(name):
    """TorchJD's NashMTL is the authors' cvxpy+ECOS solver (sequential convex approximations); with
    its max_norm 0 (no clipping) it returns α itself, the same convention as ours with max_norm 0.
    Its iterations stop at ECOS's tolerance, where α_t(Gα)_t = 1 holds to ~1e-6, ours to 1e-10: the
    two agree to 1e-6 relative or to within their own residual, whichever is larger."""
    torchjd = pytest.importorskip("torchjd")
    pytest.importorskip("cvxpy")
    pytest.importorskip("ecos")
    j = CASES[name]
    t = j.shape[0]
    nash = torchjd.aggregation.NashMTL(n_tasks=t, max_norm=0.0, update_weights_every=1, optim_niter=20)
    theirs = nash.weighting(torch.from_numpy(j)).numpy()
    ours = NashMTL([str(i) for i in range(t)], NashMTLParams(max_norm=0.0))
    ours = ours.step(StepContext(ones(t), 0, 0, grads=torch.from_numpy(j))).weights.numpy()
    gram = j @ j.T
    their_residual = float(np.max(np.abs(theirs * (gram @ theirs) - 1)))
    assert float(np.max(np.abs(ours * (gram @ ours) - 1))) <= 1e-9
    assert ours == pytest.approx(theirs, rel=max(1e-6, 2 * their_residual))


def test_end_to_end_run(tiny_run, toy_bundle):
    assert min(end_to_end_weights(tiny_run("nash-mtl"), toy_bundle, "solver_failed_steps")) > 0


def test_a_task_without_labels_is_left_out_as_on_the_present_tasks_alone():
    """Missing labels: the absent task's zero gradient row gets weight 0 and is counted; the rest is the method on
    the present tasks (tests/gramian_cases.py)."""
    from tests.gramian_cases import assert_absent_task_left_out

    assert_absent_task_left_out(NashMTL, None)
