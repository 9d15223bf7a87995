"""DualProj: the summed gradient projected onto the dual cone, checked in the gradients' own space, its
properties, the authors' regularization, and TorchJD."""

import numpy as np
import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.dual_cone import project_weights, regularized_gramian
from mtlbench.methods.dualproj import DualProj
from mtlbench.methods.params.gramian_weighting import DualConeParams
from mtlbench.registry import METHODS
from tests.dual_cone_reference import conflicting_jacobian, project_onto_dual_cone, torchjd_weighting
from tests.gramian_cases import CASES, NAMES, end_to_end_weights, ones, step_with_bad_rows

EXACT = DualConeParams(norm_eps=0.0, reg_eps=0.0)  # the paper's projection, without the authors' regularization


def weights(j: np.ndarray, params: DualConeParams = EXACT) -> np.ndarray:
    """DualProj's weights for the Jacobian j."""
    t = j.shape[0]
    out = DualProj([str(i) for i in range(t)], params).step(StepContext(ones(t), 0, 0, grads=torch.from_numpy(j)))
    return out.weights.numpy()


@pytest.mark.parametrize("t, p, seed", [(2, 5, 0), (3, 6, 1), (5, 12, 2), (8, 20, 3), (6, 4, 4), (14, 30, 5)])
def test_update_is_the_projection_of_the_summed_gradient(t, p, seed):
    """Proposition 1: Jᵀw = π_J(Σ_t g_t) with w = argmin_{v ≥ 1} vᵀGv."""
    j = conflicting_jacobian(t, p, seed)
    scale = np.linalg.norm(j, axis=1).max()
    assert weights(j) @ j == pytest.approx(project_onto_dual_cone(j, j.sum(axis=0)), abs=1e-5 * scale)


@pytest.mark.parametrize("name", NAMES)
def test_kkt_conditions_and_no_conflict(name):
    """w ≥ 1, Gw ≥ 0 (the update conflicts with no task) and (w − 1)ᵀGw = 0."""
    j = CASES[name]
    gram = j @ j.T
    w = weights(j)
    tol = 1e-9 * np.trace(gram) * np.abs(w).sum()
    assert np.all(w >= 1)
    assert np.all(gram @ w >= -tol)
    assert abs((w - 1) @ gram @ w) <= tol * np.abs(w).sum()


def test_no_conflict_is_ew():
    j = np.abs(np.random.default_rng(0).normal(size=(6, 10)))
    assert weights(j) == pytest.approx(np.ones(6), abs=1e-12)
    assert weights(j, DualConeParams()) == pytest.approx(np.ones(6), abs=1e-12)


def test_two_tasks_by_hand():
    """g_1 = (1, 0), g_2 = (−2, ½): s = g_1 + g_2 = (−1, ½) conflicts with g_1 only; its projection onto
    {g_1ᵀx ≥ 0, g_2ᵀx ≥ 0} is (0, ½) (the face g_1ᵀx = 0; s − π = −g_1, multiplier 1 ≥ 0), which is
    2 g_1 + 1 g_2: w = (2, 1)."""
    j = np.array([[1.0, 0.0], [-2.0, 0.5]])
    assert weights(j) == pytest.approx([2.0, 1.0], abs=1e-12)
    assert weights(j) @ j == pytest.approx([0.0, 0.5], abs=1e-12)


def test_sum_already_in_the_cone_is_kept():
    """Conflicting tasks whose sum conflicts with none: no projection, EW."""
    j = np.array([[1.0, 0.0], [-0.5, 1.0]])  # g_1ᵀg_2 < 0, but s = (0.5, 1) has s·g_1, s·g_2 > 0
    assert weights(j) == pytest.approx([1.0, 1.0], abs=1e-12)


def test_regularization_bounds_the_conflict():
    """With the authors' εI on G/tr(G): Gw ≥ −ε tr(G) w instead of Gw ≥ 0."""
    rng = np.random.default_rng(2)
    j = rng.normal(size=(5, 8)) + 0.3 * rng.normal(size=8)
    gram = j @ j.T
    w = weights(j, DualConeParams())
    assert np.all(gram @ w >= -1e-4 * np.trace(gram) * w * (1 + 1e-9))
    assert w == pytest.approx(weights(j), rel=1e-2)


def test_below_norm_eps_the_authors_code_does_not_project():
    j = 1e-4 * conflicting_jacobian(4, 10, 4)
    assert weights(j, DualConeParams()) == pytest.approx(np.ones(4), abs=1e-12)


def test_nan_and_zero_gradients_are_left_out_and_counted():
    j = torch.from_numpy(conflicting_jacobian(5, 16, 5))
    out, keep = step_with_bad_rows(DualProj(list("abcde")), j, nonfinite=4, zero=0, bad=float("-inf"))
    sub = j[keep].numpy()
    expected = project_weights(regularized_gramian(sub @ sub.T, 1e-4, 1e-4), np.ones((1, 3)))[0]
    assert out.weights[keep].numpy() == pytest.approx(expected, rel=1e-12)


def test_registration_and_bad_params():
    assert METHODS.get("dualproj") is DualProj and DualProj.needs == "shared_params"
    assert DualProj.weight_scale == "none"
    with pytest.raises(UserError, match="norm_eps and reg_eps"):
        DualProj(list("ab"), DualConeParams(reg_eps=-1.0))


@pytest.mark.parametrize("name", NAMES)
def test_matches_torchjd(name):
    """TorchJD's DualProjWeighting (the authors' code, norm_eps = reg_eps = 1e-4, quadprog) projects the mean
    gradient (u = 1/T); ours projects the sum (u = 1): a factor T, the projection being positively homogeneous."""
    j = CASES[name]
    theirs = torchjd_weighting("DualProjWeighting", j)
    assert weights(j, DualConeParams()) / j.shape[0] == pytest.approx(theirs, rel=1e-6, abs=1e-12)


def test_end_to_end_run(tiny_run, toy_bundle):
    assert min(end_to_end_weights(tiny_run("dualproj"), toy_bundle, "solver_failed_steps")) >= 1 - 1e-6


def test_a_task_without_labels_is_left_out_as_on_the_present_tasks_alone():
    """Missing labels: the absent task's zero gradient row gets weight 0 and is counted; the rest is the method on
    the present tasks (tests/gramian_cases.py)."""
    from tests.gramian_cases import assert_absent_task_left_out

    assert_absent_task_left_out(DualProj, None)
