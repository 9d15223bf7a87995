"""Aligned-MTL: the aligned Jacobian is σ·U Vᵀ (condition number 1), weights B 1, scale modes, TorchJD."""

import math

import numpy as np
import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.aligned_mtl import AlignedMTL, aligned_mtl_weights, balance_transformation
from mtlbench.methods.base import StepContext
from mtlbench.methods.params.gramian_weighting import AlignedMTLParams
from mtlbench.registry import METHODS
from tests.gramian_cases import CASES, NAMES, end_to_end_weights, ones, rank, step_with_bad_rows

MODES = ("min", "median", "rmse")


def aligned(j: np.ndarray, mode: str) -> np.ndarray:
    """The aligned Jacobian B J."""
    return balance_transformation(torch.from_numpy(j @ j.T), mode).numpy() @ j


def expected_scale(singular_values: np.ndarray, mode: str) -> float:
    """σ of the aligned gradients from J's non-zero singular values σ_i (λ_i = σ_i²)."""
    lam = np.sort(singular_values**2)
    return math.sqrt({"min": lam[0], "median": lam[(len(lam) - 1) // 2], "rmse": lam.mean()}[mode])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_aligned_jacobian_is_the_papers_sigma_u_vt(name, mode):
    """With the thin SVD J = U Σ Vᵀ on its rank r, B J = σ U Vᵀ: orthogonal rows of equal norm σ in the
    gradients' span, every non-zero singular value σ (condition number 1)."""
    j = CASES[name]
    r = rank(j)
    u, s, vt = np.linalg.svd(j, full_matrices=False)
    u, s, vt = u[:, :r], s[:r], vt[:r]
    sigma = expected_scale(s, mode)
    out = aligned(j, mode)
    scale = np.abs(j).max()
    assert out == pytest.approx(sigma * u @ vt, abs=1e-9 * scale)
    singular = np.linalg.svd(out, compute_uv=False)
    assert singular[:r] == pytest.approx(np.full(r, sigma), rel=1e-8)
    assert np.all(singular[r:] < 1e-8 * sigma)
    assert out @ out.T == pytest.approx(sigma**2 * u @ u.T, abs=1e-8 * sigma**2)


@pytest.mark.parametrize("name", NAMES[:6])
def test_weights_sum_the_aligned_gradients(name):
    j = CASES[name]
    t = j.shape[0]
    out = AlignedMTL([str(i) for i in range(t)]).step(StepContext(ones(t), 0, 0, grads=torch.from_numpy(j)))
    b = balance_transformation(torch.from_numpy(j @ j.T), "min").numpy()
    assert out.weights.numpy() == pytest.approx(b.sum(axis=1), rel=1e-12)
    assert out.shared_grad.numpy() == pytest.approx(aligned(j, "min").sum(axis=0), rel=1e-9, abs=1e-12)
    assert np.allclose(b, b.T)


def test_two_unit_tasks_by_hand():
    """G = [[1, c], [c, 1]]: λ = 1 + c on v = (1, 1)/√2 and 1 − c on (1, −1)/√2, and v vᵀ1 = 1, so
    B 1 = √s / √(1 + c) · 1: with "min" (s = min(1 ± c)) the weights stay 1 under conflict (c < 0) and
    shrink to √((1 − c)/(1 + c)) under agreement; with "rmse" (s = 1) they are 1/√(1 + c)."""
    for c in (-0.7, -0.1, 0.3, 0.9):
        gram = torch.tensor([[1.0, c], [c, 1.0]], dtype=torch.float64)
        w = aligned_mtl_weights(gram, "min").numpy()
        assert w == pytest.approx(np.full(2, math.sqrt(min(1 - c, 1 + c) / (1 + c))), rel=1e-12)
        assert aligned_mtl_weights(gram, "rmse").numpy() == pytest.approx(np.full(2, 1 / math.sqrt(1 + c)), rel=1e-12)


def test_orthogonal_and_identical_gradients():
    norms = np.array([0.5, 2.0, 8.0])
    w = aligned_mtl_weights(torch.from_numpy(np.diag(norms**2)), "min").numpy()
    assert w == pytest.approx(norms.min() / norms, rel=1e-12)  # every g_t rescaled to the smallest norm
    g = np.random.default_rng(0).normal(size=7)
    same = torch.from_numpy(np.tile(g, (4, 1)))
    out = AlignedMTL(list("abcd")).step(StepContext(ones(4), 0, 0, grads=same))
    assert out.weights.numpy() == pytest.approx(np.ones(4), rel=1e-12)  # rank 1: EW
    assert AlignedMTL.weight_scale == "none"


def test_the_rank_tolerance_is_the_authors_float32_one():
    """Eigenvalues at most T·ε₃₂·λ_max are dropped (their torch.finfo() is float32's): a direction 1e-8
    below the largest is noise, one 1e-5 below is kept and sets the "min" scale."""
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    for small, kept in [(1e-8, 2), (1e-5, 3)]:
        lam = np.array([1.0, 0.5, small])
        b = balance_transformation(torch.from_numpy(q @ np.diag(lam) @ q.T), "min").numpy()
        assert np.linalg.matrix_rank(b, tol=1e-6) == kept


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_matches_torchjd(name, mode):
    """TorchJD's AlignedMTLWeighting applies the mean preference vector (B 1/T); the authors' code and
    ours apply B 1: a factor T. TorchJD's rank tolerance uses the Gramian's dtype's ε (float64 here),
    ours the authors' float32 one: the same rank on these Gramians."""
    torchjd = pytest.importorskip("torchjd")
    j = CASES[name]
    t = j.shape[0]
    gram = torch.from_numpy(j @ j.T)
    theirs = torchjd.aggregation.AlignedMTLWeighting(scale_mode=mode)(gram).numpy()
    assert aligned_mtl_weights(gram, mode).numpy() / t == pytest.approx(theirs, rel=1e-6, abs=1e-9)


def test_nan_and_zero_gradients_are_left_out_and_counted():
    j = torch.randn(5, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out, keep = step_with_bad_rows(AlignedMTL(list("abcde")), j, nonfinite=2, zero=4)
    sub = j[keep]
    assert torch.allclose(out.weights[keep], aligned_mtl_weights(sub @ sub.T, "min"))


def test_registration_and_bad_params():
    assert METHODS.get("aligned-mtl") is AlignedMTL and AlignedMTL.needs == "shared_params"
    assert AlignedMTLParams().scale_mode == "min"
    with pytest.raises(UserError, match="scale_mode"):
        AlignedMTL(list("ab"), AlignedMTLParams(scale_mode="max"))


def test_end_to_end_run(tiny_run, toy_bundle):
    assert min(end_to_end_weights(tiny_run("aligned-mtl"), toy_bundle)) > 0


def test_a_task_without_labels_is_left_out_as_on_the_present_tasks_alone():
    """Missing labels: the absent task's zero gradient row gets weight 0 and is counted; the rest is the method on
    the present tasks (tests/gramian_cases.py)."""
    from tests.gramian_cases import assert_absent_task_left_out

    assert_absent_task_left_out(AlignedMTL, None)
