"""ConFIG: the Gramian form equals eq. 2 on the vectors; equal cosines, projection length, closed forms."""

import pytest
import torch

from mtlbench.methods.base import StepContext
from mtlbench.methods.config import ConFIG, config_coefficients, config_weights
from tests.gramian_cases import end_to_end_weights, ones, step_with_bad_rows


def jacobian(t: int, p: int, seed: int) -> torch.Tensor:
    """Random gradients of unequal sizes, many pairs in conflict."""
    g = torch.Generator().manual_seed(seed)
    j = torch.randn(t, p, generator=g, dtype=torch.float64)
    return j * torch.rand(t, 1, generator=g, dtype=torch.float64).add(0.1) * 5


def config_on_vectors(j: torch.Tensor) -> torch.Tensor:
    """Reference, eq. 2 on the vectors: g_u = 𝒰(U⁺1), update (Σ_t g_tᵀg_u) g_u."""
    units = j / j.norm(dim=1, keepdim=True)
    direction = torch.linalg.pinv(units) @ torch.ones(j.shape[0], dtype=j.dtype)
    unit = direction / direction.norm()
    return (j @ unit).sum() * unit


def update(j: torch.Tensor) -> torch.Tensor:
    """Σ_t w_t g_t with ConFIG's weights from the Gramian."""
    return config_weights(j @ j.T)[0] @ j


@pytest.mark.parametrize("t, p, seed", [(2, 6, 0), (3, 10, 1), (5, 8, 2), (14, 50, 3), (14, 400, 4)])
def test_gramian_form_equals_the_vector_formula(t, p, seed):
    j = jacobian(t, p, seed)
    assert torch.allclose(update(j), config_on_vectors(j), rtol=1e-9, atol=1e-12)
    # U⁺1 itself: c = D⁻¹ C⁺ 1 reproduces the pseudo-inverse direction
    units = j / j.norm(dim=1, keepdim=True)
    pinv_direction = torch.linalg.pinv(units) @ torch.ones(t, dtype=torch.float64)
    assert torch.allclose(config_coefficients(j @ j.T) @ j, pinv_direction, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("t, p, seed", [(2, 6, 5), (3, 10, 6), (14, 50, 7)])
def test_equal_positive_cosine_and_projection_length(t, p, seed):
    j = jacobian(t, p, seed)
    d = update(j)
    cosines = (j @ d) / (j.norm(dim=1) * d.norm())
    assert cosines.min() > 0 and torch.allclose(cosines, cosines.mean().expand(t), atol=1e-12)
    assert d.norm().item() == pytest.approx((j @ (d / d.norm())).sum().item(), rel=1e-12)


def test_identical_and_orthogonal_gradients():
    g = torch.randn(12, dtype=torch.float64)
    same = g.repeat(4, 1)
    w, ok = config_weights(same @ same.T)
    assert ok and torch.allclose(w, torch.ones(4, dtype=torch.float64))  # EW: Σ g_t = 4g
    norms = torch.tensor([0.5, 2.0, 4.0], dtype=torch.float64)
    orthogonal = torch.diag(norms)
    w, _ = config_weights(orthogonal @ orthogonal.T)
    assert torch.allclose(w, norms.mean() / norms)  # update (mean ‖g‖) Σ_t g_t/‖g_t‖


def test_two_tasks_match_the_authors_closed_form():
    """The authors' two-task operator (ConFIG_update_double): unit orthogonal components o_1 ⊥ g_1, o_2 ⊥ g_2,
    direction c_1 o_1 + o_2 with c_1 = (o_2ᵀu_1)/(o_1ᵀu_2), then the projection length."""
    for seed in range(4):
        g1, g2 = jacobian(2, 9, 20 + seed)
        u1, u2 = g1 / g1.norm(), g2 / g2.norm()
        cos = u1 @ u2
        o1 = g2 - g2.norm() * cos * u1
        o2 = g1 - g1.norm() * cos * u2
        o1, o2 = o1 / o1.norm(), o2 / o2.norm()
        direction = (o2 @ u1) / (o1 @ u2) * o1 + o2
        unit = direction / direction.norm()
        expected = (g1 @ unit + g2 @ unit) * unit
        assert torch.allclose(update(torch.stack([g1, g2])), expected, rtol=1e-10)


def test_direction_ignores_gradient_sizes():
    j = jacobian(4, 20, 8)
    scaled = j * torch.tensor([[1.0], [10.0], [0.1], [3.0]], dtype=torch.float64)
    d, d_scaled = update(j), update(scaled)
    assert torch.allclose(d / d.norm(), d_scaled / d_scaled.norm(), atol=1e-12)


def test_opposite_gradients_give_no_update():
    """g and −g: C⁺1 = 0, so U⁺1 = 0 and, as the authors' unit_vector(0) = 0, the update is 0 (counted)."""
    g = torch.randn(10, dtype=torch.float64)
    j = torch.stack([g, -g])
    m = ConFIG(["a", "b"])
    out = m.step(StepContext(ones(2), 0, 0, grads=j))
    assert out.weights.abs().sum() == 0 and out.shared_grad.abs().sum() == 0
    assert m.diagnostics()["zero_direction_steps"] == 1 and m.diagnostics()["nonfinite_update_steps"] == 0


def test_nan_and_zero_gradients_are_left_out_and_counted():
    """A zero row changes nothing (the authors' nan_to_num makes it a zero row of U, which U⁺1 ignores)."""
    j = jacobian(5, 16, 9)
    out, _ = step_with_bad_rows(ConFIG(list("abcde")), j, nonfinite=0, zero=3)
    with_zero_row = j[[1, 2, 3, 4]]
    assert torch.allclose(out.shared_grad, config_on_vectors(j[[1, 2, 4]]), rtol=1e-9)
    units = torch.nan_to_num(with_zero_row / with_zero_row.norm(dim=1, keepdim=True), 0.0)
    direction = torch.linalg.pinv(units) @ torch.ones(4, dtype=torch.float64)
    unit = direction / direction.norm()
    assert torch.allclose(out.shared_grad, (with_zero_row @ unit).sum() * unit, rtol=1e-9)
    assert ConFIG.weight_scale == "none" and ConFIG.needs == "shared_params"


@pytest.mark.parametrize("t", [3, 14])
@pytest.mark.parametrize("seed", range(3))
def test_matches_torchjd(t, seed):
    """torchjd's ConFIG is an aggregator (pinv of the unit rows, projection length): compare the update itself."""
    torchjd = pytest.importorskip("torchjd")
    j = jacobian(t, 80, 100 + seed)
    expected = torchjd.aggregation.ConFIG()(j)
    out = ConFIG([str(i) for i in range(t)]).step(StepContext(ones(t), 0, 0, grads=j))
    assert torch.allclose(out.shared_grad, expected, rtol=1e-6, atol=1e-9 * expected.abs().max().item())


def test_end_to_end_run(tiny_run, toy_bundle):
    end_to_end_weights(tiny_run("config"), toy_bundle, "zero_direction_steps")


def test_a_task_without_labels_is_left_out_as_on_the_present_tasks_alone():
    """Missing labels: the absent task's zero gradient row gets weight 0 and is counted; the rest is the method on
    the present tasks (tests/gramian_cases.py)."""
    from tests.gramian_cases import assert_absent_task_left_out

    assert_absent_task_left_out(ConFIG, None)
