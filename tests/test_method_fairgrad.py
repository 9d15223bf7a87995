"""FairGrad: the weights solve G w = w^(−1/α) (closed forms, the authors' least_squares, torchjd), and the scale."""

import numpy as np
import pytest
import torch
from scipy.optimize import least_squares

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.fairgrad import FairGrad, alpha_fair_weights
from mtlbench.methods.params import FairGradParams
from tests.gramian_cases import end_to_end_weights, ones, step_with_bad_rows

ALPHAS = [0.5, 1.0, 2.0, 5.0]


def jacobian(t: int, p: int, seed: int) -> torch.Tensor:
    """Random gradients of unequal sizes, every third seed strongly correlated."""
    g = torch.Generator().manual_seed(seed)
    j = torch.randn(t, p, generator=g, dtype=torch.float64) * torch.rand(t, 1, generator=g, dtype=torch.float64).add(
        0.1
    )
    if seed % 3 == 0:
        j = j + 2 * torch.randn(1, p, generator=g, dtype=torch.float64)
    return 3 * j


def authors_least_squares(gram: np.ndarray, alpha: float) -> np.ndarray:
    """The authors' solve (weight_methods.py lines 814-822), with tighter tolerances."""
    t = gram.shape[0]
    res = least_squares(
        lambda x: gram @ x - np.power(1 / x, 1 / alpha),
        np.ones(t) / t,
        bounds=(0, np.inf),
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    return res.x


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("t, p, seed", [(2, 5, 0), (3, 10, 1), (5, 8, 2), (14, 50, 3), (14, 20, 4), (14, 400, 5)])
def test_weights_solve_the_fairness_equation(t, p, seed, alpha):
    j = jacobian(t, p, seed)
    gram = j @ j.T
    w, converged = alpha_fair_weights(gram, alpha)
    assert converged and bool((w > 0).all())
    progress = gram @ w  # g_tᵀd for d = Σ w_t g_t
    assert torch.allclose(progress, w ** (-1 / alpha), rtol=1e-10)
    ref = authors_least_squares(gram.numpy(), alpha)
    assert np.allclose(w.numpy(), ref, rtol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_alpha_one_is_proportional_fairness(seed):
    """α = 1: G w = 1/w (Nash-MTL's bargaining solution), so every task's progress is 1/w_t and ‖d‖² = T."""
    j = jacobian(6, 30, seed)
    gram = j @ j.T
    w, _ = alpha_fair_weights(gram, 1.0)
    d = w @ j
    assert torch.allclose((j @ d) * w, torch.ones(6, dtype=torch.float64), rtol=1e-10)
    assert (d @ d).item() == pytest.approx(6.0, rel=1e-10)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_orthogonal_and_identical_gradients(alpha):
    """Orthogonal: s_t w_t = w_t^(−1/α), w_t = s_t^(−α/(α+1)); identical (‖g‖² = s): all w = (sT)^(−α/(α+1))."""
    sq = torch.tensor([0.5, 2.0, 9.0], dtype=torch.float64)
    w, _ = alpha_fair_weights(torch.diag(sq), alpha)
    assert torch.allclose(w, sq ** (-alpha / (alpha + 1)), rtol=1e-12)
    g = torch.randn(20, dtype=torch.float64)
    same = g.repeat(4, 1)
    w, _ = alpha_fair_weights(same @ same.T, alpha)
    assert torch.allclose(w, torch.full((4,), (4 * (g @ g).item()) ** (-alpha / (alpha + 1)), dtype=torch.float64))


def test_two_tasks_by_hand():
    """α = 1, G = [[1, c], [c, 1]]: by symmetry w_1 = w_2 = w with (1 + c) w = 1/w."""
    for c in (-0.5, 0.0, 0.8):
        w, _ = alpha_fair_weights(torch.tensor([[1.0, c], [c, 1.0]], dtype=torch.float64), 1.0)
        assert torch.allclose(w, torch.full((2,), (1 + c) ** -0.5, dtype=torch.float64))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_scaling_the_gramian_scales_the_root(alpha):
    j = jacobian(5, 12, 7)
    w, _ = alpha_fair_weights(j @ j.T, alpha)
    w_scaled, _ = alpha_fair_weights(1e-6 * (j @ j.T), alpha)
    assert torch.allclose(w_scaled, w * 1e-6 ** (-alpha / (alpha + 1)), rtol=1e-10)


@pytest.mark.parametrize("max_norm", [0.0, 1.0, 1e3])
def test_update_is_T_times_w_clipped_like_clip_grad_norm(max_norm):
    j = jacobian(4, 25, 8)
    m = FairGrad(list("abcd"), FairGradParams(max_norm=max_norm))
    out = m.step(StepContext(ones(4), 0, 0, grads=j))
    w, _ = alpha_fair_weights(j @ j.T, 2.0)
    param = torch.nn.Parameter(torch.zeros(25, dtype=torch.float64))
    param.grad = 4 * w @ j  # the authors: Σ w_t g_t × n_tasks, then clip_grad_norm_(shared, max_norm)
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_([param], max_norm)
    assert torch.allclose(out.shared_grad, param.grad, rtol=1e-10)
    assert torch.allclose(out.shared_grad, out.weights @ j, rtol=1e-10)
    clipped = max_norm > 0 and (4 * w @ j).norm() > max_norm
    assert m.diagnostics()["clipped_steps"] == int(clipped)
    assert FairGrad.weight_scale == "none" and FairGrad.needs == "shared_params"


def test_defaults_are_the_authors():
    assert FairGradParams() == FairGradParams(alpha=2.0, max_norm=1.0)


def test_no_root_when_zero_is_in_the_hull():
    """g and −g: (Gw)_1 = −(Gw)_2 cannot both be positive; the step leaves the trunk unchanged, counted."""
    g = torch.randn(10, dtype=torch.float64)
    j = torch.stack([g, -g])
    assert not alpha_fair_weights(j @ j.T, 2.0)[1]
    m = FairGrad(["a", "b"])
    out = m.step(StepContext(ones(2), 0, 0, grads=j))
    assert out.weights.abs().sum() == 0 and out.shared_grad.abs().sum() == 0
    assert m.diagnostics()["solver_not_converged_steps"] == 1


def test_nan_and_zero_gradients_are_left_out_and_counted():
    j = jacobian(5, 16, 9)
    m = FairGrad(list("abcde"), FairGradParams(max_norm=0.0))
    out, keep = step_with_bad_rows(m, j, nonfinite=0, zero=3)
    sub = j[keep]
    # a zero gradient leaves the others' equations unchanged (its row and column of G are 0)
    assert torch.allclose(out.weights[keep], 5 * alpha_fair_weights(sub @ sub.T, 2.0)[0])
    assert m.diagnostics()["nonfinite_update_steps"] == 0
    j[:] = float("nan")
    out = m.step(StepContext(ones(5), 1, 0, grads=j))
    assert out.weights.abs().sum() == 0 and m.diagnostics()["no_usable_task_steps"] == 1


def test_bad_params():
    for bad in ({"alpha": 0.0}, {"alpha": -1.0}, {"max_norm": -1.0}):
        with pytest.raises(UserError, match="alpha|max_norm"):
            FairGrad(list("ab"), FairGradParams(**bad))


@pytest.mark.parametrize("alpha", [1.0, 2.0])
@pytest.mark.parametrize("t", [3, 14])
@pytest.mark.parametrize("seed", range(3))
def test_matches_torchjd(t, seed, alpha):
    """torchjd's FairGradWeighting returns w (no ×T, no clipping): our applied weights with max_norm=0 are T·w."""
    torchjd = pytest.importorskip("torchjd")
    j = jacobian(t, 60, 100 + seed)
    gram = j @ j.T
    ref = torchjd.aggregation.FairGradWeighting(alpha=alpha)(gram)
    w, _ = alpha_fair_weights(gram, alpha)
    assert torch.allclose(w, ref, rtol=1e-6, atol=0)
    out = FairGrad([str(i) for i in range(t)], FairGradParams(alpha=alpha, max_norm=0.0)).step(
        StepContext(ones(t), 0, 0, grads=j)
    )
    assert torch.allclose(out.weights, t * ref, rtol=1e-6, atol=0)


def test_end_to_end_run(tiny_run, toy_bundle):
    assert min(end_to_end_weights(tiny_run("fairgrad"), toy_bundle, "solver_not_converged_steps")) > 0


def test_a_task_without_labels_is_left_out_as_on_the_present_tasks_alone():
    """Missing labels: the absent task's zero gradient row gets weight 0 and is counted; the rest is the method on
    the present tasks (tests/gramian_cases.py)."""
    from tests.gramian_cases import assert_absent_task_left_out

    assert_absent_task_left_out(FairGrad, FairGradParams(max_norm=0.0), scale=4 / 3)
