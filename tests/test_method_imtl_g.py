"""IMTL-G: the paper's closed form, equal projections onto every unit gradient, scale invariance, TorchJD."""

import numpy as np
import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.imtl_g import IMTLG, imtl_g_weights
from mtlbench.registry import METHODS
from tests.gramian_cases import CASES, NAMES, end_to_end_weights, ones, step_with_bad_rows


def alpha_of(j: np.ndarray) -> np.ndarray:
    """IMTL-G's α for the Jacobian j (checked to exist)."""
    alpha, ok = imtl_g_weights(torch.from_numpy(j @ j.T))
    assert ok
    return alpha.numpy()


def paper_closed_form(j: np.ndarray) -> np.ndarray:
    """The paper's α: α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹ with rows u_1 − u_t and g_1 − g_t, α_1 = 1 − Σ α_{2:T}."""
    u = j / np.linalg.norm(j, axis=1, keepdims=True)
    d_rows, u_rows = j[0] - j[1:], u[0] - u[1:]
    rest = j[0] @ u_rows.T @ np.linalg.inv(d_rows @ u_rows.T)
    return np.concatenate([[1 - rest.sum()], rest])


def unit_projections(j: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(Σ_s α_s g_s)ᵀ u_t for every t."""
    return j @ (alpha @ j) / np.linalg.norm(j, axis=1)


@pytest.mark.parametrize("t, p, seed", [(2, 5, 0), (3, 20, 1), (6, 30, 2), (14, 40, 3), (14, 14, 4)])
def test_the_papers_closed_form(t, p, seed):
    rng = np.random.default_rng(seed)
    j = rng.normal(size=(t, p)) * rng.lognormal(0, 1.5, size=(t, 1))
    alpha = alpha_of(j)
    assert alpha.sum() == pytest.approx(1, abs=1e-12)
    assert alpha == pytest.approx(paper_closed_form(j), rel=1e-7, abs=1e-9)
    proj = unit_projections(j, alpha)
    assert proj == pytest.approx(np.full(t, proj[0]), rel=1e-9)  # the defining property


EXACT = [n for n in NAMES if n.startswith(("full", "duplicate"))]  # d = (‖g_t‖)_t lies in the range of G
INEXACT = [n for n in NAMES if n not in EXACT]


@pytest.mark.parametrize("name", EXACT)
def test_equal_projections_onto_every_unit_gradient(name):
    """Also where G is singular because a task is duplicated: the point still exists."""
    j = CASES[name]
    alpha = alpha_of(j)
    assert alpha.sum() == pytest.approx(1, abs=1e-12)
    proj = unit_projections(j, alpha)
    assert proj == pytest.approx(np.full(len(proj), proj[0]), rel=1e-8)


@pytest.mark.parametrize("name", INEXACT)
def test_without_an_equal_projection_point_alpha_is_the_least_squares_solution(name):
    """A task that combines others (or fewer dimensions than tasks) can leave no equal-projection
    point: α ∝ G⁺d, the minimum-norm minimizer of ‖Gx − d‖."""
    j = CASES[name]
    gram = j @ j.T
    d = np.sqrt(np.diag(gram))
    alpha = alpha_of(j)
    x = np.linalg.lstsq(gram, d, rcond=None)[0]
    assert alpha == pytest.approx(x / x.sum(), rel=1e-6, abs=1e-9)
    proj = unit_projections(j, alpha)
    assert np.ptp(proj) > 1e-6 * np.abs(proj).max()  # not equal: no such point exists


def test_two_tasks_by_hand():
    """The aggregate bisects u_1 and u_2: g ∝ u_1 + u_2, i.e. α ∝ (1/‖g_1‖, 1/‖g_2‖)."""
    g1, g2 = np.array([3.0, 0.0]), np.array([-1.0, 1.0])
    alpha = alpha_of(np.stack([g1, g2]))
    n1, n2 = 3.0, np.sqrt(2.0)
    assert alpha == pytest.approx([n2 / (n1 + n2), n1 / (n1 + n2)], abs=1e-12)
    g = alpha @ np.stack([g1, g2])
    bisector = g1 / n1 + g2 / n2
    assert g[0] * bisector[1] == pytest.approx(g[1] * bisector[0], abs=1e-12)


def test_orthogonal_and_identical_gradients():
    j = np.diag([1.0, 2.0, 4.0])
    assert alpha_of(j) == pytest.approx(np.array([4.0, 2.0, 1.0]) / 7.0, abs=1e-12)  # α_t ∝ 1/‖g_t‖
    same = np.tile(np.random.default_rng(0).normal(size=8), (5, 1))
    out = IMTLG(list("abcde")).step(StepContext(ones(5), 0, 0, grads=torch.from_numpy(same)))
    assert out.weights.numpy() == pytest.approx(np.ones(5), abs=1e-12)  # EW
    assert IMTLG.weight_scale == "sum-to-T"


def test_a_duplicated_task_splits_its_weight():
    rng = np.random.default_rng(5)
    j = rng.normal(size=(3, 10))
    alpha = alpha_of(np.vstack([j, j[0]]))
    assert alpha[0] == pytest.approx(alpha[3], abs=1e-12)  # the minimum-norm solution splits evenly
    merged = alpha_of(j)
    assert np.concatenate([[alpha[0] + alpha[3]], alpha[1:3]]) == pytest.approx(merged, abs=1e-10)


def test_direction_does_not_depend_on_the_losses_scales():
    """Scale invariance (the paper's claim): rescaling a task's loss leaves the update's direction."""
    rng = np.random.default_rng(6)
    j = rng.normal(size=(5, 20))
    scaled = j * np.array([[10.0], [0.1], [1.0], [3.0], [0.01]])
    d1, d2 = alpha_of(j) @ j, alpha_of(scaled) @ scaled
    assert d1 / np.linalg.norm(d1) == pytest.approx(d2 / np.linalg.norm(d2), abs=1e-10)
    assert alpha_of(1e-6 * j) == pytest.approx(alpha_of(j), abs=1e-12)  # and on the Gramian's scale


def test_step_weights_are_T_alpha():
    rng = np.random.default_rng(7)
    j = torch.from_numpy(rng.normal(size=(4, 30)))
    out = IMTLG(list("abcd")).step(StepContext(ones(4), 0, 0, grads=j))
    assert torch.allclose(out.weights, 4 * imtl_g_weights(j @ j.T)[0])
    assert out.weights.sum().item() == pytest.approx(4)
    assert torch.allclose(out.shared_grad, out.weights @ j)


def test_opposite_gradients_are_degenerate():
    """g and −g: every aggregate has projections c and −c; no equal-projection point exists."""
    g = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    m = IMTLG(list("ab"))
    out = m.step(StepContext(ones(2), 0, 0, grads=torch.stack([g, -g])))
    assert out.weights.abs().sum() == 0 and out.shared_grad.abs().sum() == 0
    assert m.diagnostics()["degenerate_steps"] == 1


def test_nan_and_zero_gradients_are_left_out_and_counted():
    j = torch.randn(5, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out, keep = step_with_bad_rows(IMTLG(list("abcde")), j, nonfinite=1, zero=3)
    sub = j[keep]
    assert torch.allclose(out.weights[keep], 5 * imtl_g_weights(sub @ sub.T)[0])  # sum to T still
    assert torch.allclose(out.shared_grad, out.weights[keep] @ sub)


def test_registration_and_no_hyperparameters():
    assert METHODS.get("imtl-g") is IMTLG and IMTLG.needs == "shared_params"
    with pytest.raises(UserError, match="imtl-g"):
        IMTLG.make_params({"c": 0.4})


@pytest.mark.parametrize("name", NAMES)
def test_matches_torchjd(name):
    """TorchJD's IMTLGWeighting gives α itself (Σα = 1): ours are T·α, the benchmark's scale."""
    torchjd = pytest.importorskip("torchjd")
    j = CASES[name]
    gram = torch.from_numpy(j @ j.T)
    theirs = torchjd.aggregation.IMTLGWeighting()(gram).numpy()
    t = j.shape[0]
    ours = IMTLG([str(i) for i in range(t)]).step(StepContext(ones(t), 0, 0, grads=torch.from_numpy(j))).weights
    assert ours.numpy() / t == pytest.approx(theirs, rel=1e-6, abs=1e-9)


def test_end_to_end_run(tiny_run, toy_bundle):
    run = tiny_run("imtl-g")
    end_to_end_weights(run, toy_bundle)
    for step in run.steps():
        assert sum(r["weight"] for r in run.weights if r["step"] == step) == pytest.approx(14, rel=1e-5)


def test_a_task_without_labels_is_left_out_as_on_the_present_tasks_alone():
    """Missing labels: the absent task's zero gradient row gets weight 0 and is counted; the rest is the method on
    the present tasks (tests/gramian_cases.py)."""
    from tests.gramian_cases import assert_absent_task_left_out

    assert_absent_task_left_out(IMTLG, None, scale=4 / 3)
