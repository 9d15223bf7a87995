"""UPGrad: the sum of the task gradients projected onto the dual cone, checked in the gradients' own
space, its properties, the authors' regularization, and TorchJD."""

import numpy as np
import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.dual_cone import project_weights, regularized_gramian
from mtlbench.methods.params.gramian_weighting import DualConeParams
from mtlbench.methods.pcgrad import pcgrad_weights
from mtlbench.methods.upgrad import UPGrad
from mtlbench.registry import METHODS
from tests.dual_cone_reference import conflicting_jacobian, project_onto_dual_cone, torchjd_weighting
from tests.gramian_cases import CASES, NAMES, end_to_end_weights, ones, step_with_bad_rows

EXACT = DualConeParams(norm_eps=0.0, reg_eps=0.0)  # the paper's projection, without the authors' regularization


def weights(j: np.ndarray, params: DualConeParams = EXACT) -> np.ndarray:
    """UPGrad's weights for the Jacobian j."""
    t = j.shape[0]
    out = UPGrad([str(i) for i in range(t)], params).step(StepContext(ones(t), 0, 0, grads=torch.from_numpy(j)))
    return out.weights.numpy()


@pytest.mark.parametrize("t, p, seed", [(2, 5, 0), (3, 6, 1), (5, 12, 2), (8, 20, 3), (6, 4, 4)])
def test_each_projection_matches_the_projection_in_gradient_space(t, p, seed):
    """Proposition 1: Jᵀw_i = π_J(g_i) with w_i = argmin_{v ≥ e_i} vᵀGv; the update is Σ_i π_J(g_i)."""
    j = conflicting_jacobian(t, p, seed)
    w = project_weights(j @ j.T, np.eye(t))
    scale = np.linalg.norm(j, axis=1).max()
    for i in range(t):
        assert w[i] @ j == pytest.approx(project_onto_dual_cone(j, j[i]), abs=1e-6 * scale)
    assert weights(j) @ j == pytest.approx(sum(project_onto_dual_cone(j, g) for g in j), abs=1e-5 * scale)


@pytest.mark.parametrize("name", NAMES)
def test_kkt_conditions_and_no_conflict(name):
    """Each w_i: v ≥ e_i, Gv ≥ 0 (the projection conflicts with no task) and (v − e_i)ᵀGv = 0."""
    j = CASES[name]
    gram = j @ j.T
    t = len(gram)
    w = project_weights(gram, np.eye(t))
    tol = 1e-9 * np.trace(gram)
    for i in range(t):
        assert np.all(w[i] >= np.eye(t)[i])
        assert np.all(gram @ w[i] >= -tol * np.abs(w[i]).sum())
        assert abs((w[i] - np.eye(t)[i]) @ gram @ w[i]) <= tol * np.abs(w[i]).sum() ** 2
    d = weights(j) @ j
    assert np.all(j @ d >= -tol * np.abs(weights(j)).sum())  # non-negative inner product with every g_t
    assert np.all(weights(j) >= 1)  # w = Σ_i w_i ≥ Σ_i e_i


def test_no_conflict_is_ew():
    """Pairwise non-negative inner products: every g_i is in the dual cone, so the update is Σ g_t, also
    with the authors' regularization (G/tr + εI stays entrywise ≥ 0)."""
    j = np.abs(np.random.default_rng(0).normal(size=(6, 10)))
    assert weights(j) == pytest.approx(np.ones(6), abs=1e-12)
    assert weights(j, DualConeParams()) == pytest.approx(np.ones(6), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_two_conflicting_tasks_by_hand(seed):
    """c = g_1ᵀg_2 < 0: π(g_1) = g_1 − (c/‖g_2‖²) g_2 (feasible: ‖g_1‖² − c²/‖g_2‖² ≥ 0), so w = (1 − c/‖g_1‖²,
    1 − c/‖g_2‖²): the two projections summed, as PCGrad's for two tasks."""
    rng = np.random.default_rng(seed)
    g1 = rng.normal(size=7)
    g2 = -g1 * rng.uniform(0.2, 3) + rng.normal(size=7)
    a, b, c = g1 @ g1, g2 @ g2, g1 @ g2
    assert c < 0
    j = np.stack([g1, g2])
    assert weights(j) == pytest.approx([1 - c / a, 1 - c / b], rel=1e-10)
    orders = torch.tensor([[1], [0]])
    assert weights(j) == pytest.approx(pcgrad_weights(torch.from_numpy(j @ j.T), orders).numpy(), rel=1e-10)


def test_opposite_gradients_give_no_update():
    """g and −g: the dual cone is the hyperplane ⊥ g, both projections are 0."""
    g = np.random.default_rng(1).normal(size=9)
    j = np.stack([g, -g])
    assert np.linalg.norm(weights(j) @ j) <= 1e-9 * np.linalg.norm(g)


def test_regularization_bounds_the_conflict():
    """With the authors' εI on G/tr(G) the projection is that of [J, √(ε tr G) I]: Gw ≥ −ε tr(G) w, a
    small conflict the exact projection (ε = 0) does not have."""
    rng = np.random.default_rng(2)
    j = rng.normal(size=(5, 8)) + 0.3 * rng.normal(size=8)
    gram = j @ j.T
    w = weights(j, DualConeParams())
    eps = DualConeParams().reg_eps
    assert np.all(gram @ w >= -eps * np.trace(gram) * w * (1 + 1e-9))
    exact = weights(j)
    assert np.all(gram @ exact >= -1e-10 * np.trace(gram))
    assert w == pytest.approx(exact, rel=1e-2)  # close, not equal
    assert not np.allclose(w, exact, rtol=1e-8)


def test_scale_of_the_gradients_does_not_matter_above_norm_eps():
    j = conflicting_jacobian(5, 10, 3)
    assert weights(1e3 * j, DualConeParams()) == pytest.approx(weights(j, DualConeParams()), rel=1e-10)


def test_below_norm_eps_the_authors_code_does_not_project():
    """trace(G) < norm_eps: TorchJD replaces G/tr(G) by 0, so G = εI and v = e_i: EW's weights."""
    j = 1e-4 * conflicting_jacobian(4, 10, 4)
    assert np.trace(j @ j.T) < 1e-4
    assert weights(j, DualConeParams()) == pytest.approx(np.ones(4), abs=1e-12)
    assert regularized_gramian(j @ j.T, 1e-4, 1e-4) == pytest.approx(1e-4 * np.eye(4))


def test_nan_and_zero_gradients_are_left_out_and_counted():
    j = torch.from_numpy(conflicting_jacobian(5, 16, 5))
    out, keep = step_with_bad_rows(UPGrad(list("abcde")), j, nonfinite=1, zero=2)
    sub = j[keep].numpy()
    expected = project_weights(regularized_gramian(sub @ sub.T, 1e-4, 1e-4), np.eye(3)).sum(axis=0)
    assert out.weights[keep].numpy() == pytest.approx(expected, rel=1e-12)


def test_registration_and_bad_params():
    assert METHODS.get("upgrad") is UPGrad and UPGrad.needs == "shared_params"
    assert DualConeParams() == DualConeParams(norm_eps=1e-4, reg_eps=1e-4)  # TorchJD's defaults
    assert UPGrad.weight_scale == "none"
    for bad in ({"reg_eps": -1e-4}, {"norm_eps": -1.0}):
        with pytest.raises(UserError, match="norm_eps and reg_eps"):
            UPGrad(list("ab"), DualConeParams(**bad))


@pytest.mark.parametrize("name", NAMES)
def test_matches_torchjd(name):
    """TorchJD's UPGradWeighting (the authors' code, defaults norm_eps = reg_eps = 1e-4, quadprog) averages
    the projections (preference vector 1/T); ours sums them: a factor T."""
    j = CASES[name]
    theirs = torchjd_weighting("UPGradWeighting", j)
    assert weights(j, DualConeParams()) / j.shape[0] == pytest.approx(theirs, rel=1e-6, abs=1e-12)


def test_end_to_end_run(tiny_run, toy_bundle):
    assert min(end_to_end_weights(tiny_run("upgrad"), toy_bundle, "solver_failed_steps")) >= 1 - 1e-6


def test_a_task_without_labels_is_left_out_as_on_the_present_tasks_alone():
    """Missing labels: the absent task's zero gradient row gets weight 0 and is counted; the rest is the method on
    the present tasks (tests/gramian_cases.py)."""
    from tests.gramian_cases import assert_absent_task_left_out

    assert_absent_task_left_out(UPGrad, None)
