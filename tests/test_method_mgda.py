"""MGDA / MGDA-UB: the min-norm point of the gradients' hull, against an independent QP solver."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from dataclasses import replace

from mtlbench.config import build_config
from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.mgda import MGDA, MGDAUB, gradient_normalizers, mgda_weights, min_norm_weights
from mtlbench.methods.params import MGDAParams
from mtlbench.registry import METHODS
from mtlbench.results.store import ResultsStore
from mtlbench.training import train_run
from tests.tiny_model import tiny_model
from tests.configs import cpu_smoke_config


def scipy_min_norm(gram: np.ndarray) -> np.ndarray:
    """Reference: SLSQP on min αᵀGα s.t. α ≥ 0, Σα = 1, from several starts."""
    t = gram.shape[0]
    best = None
    for start in [np.full(t, 1 / t)] + list(np.eye(t)):
        res = minimize(
            lambda a: a @ gram @ a,
            start,
            jac=lambda a: 2 * gram @ a,
            method="SLSQP",
            bounds=[(0, 1)] * t,
            constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1, "jac": lambda a: np.ones(t)}],
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        if best is None or res.x @ gram @ res.x < best @ gram @ best:
            best = res.x
    return best


def jacobians():
    """Random and degenerate (T, P) Jacobians."""
    rng = np.random.default_rng(0)
    cases = {}
    for t, p in ((3, 20), (8, 50), (14, 100), (14, 10), (6, 3)):
        cases[f"random-{t}x{p}"] = rng.normal(size=(t, p))
        cases[f"correlated-{t}x{p}"] = rng.normal(size=p) + 0.2 * rng.normal(size=(t, p))
        cases[f"scaled-{t}x{p}"] = rng.normal(size=(t, p)) * rng.lognormal(0, 1.5, size=(t, 1))
    g = rng.normal(size=30)
    cases["identical"] = np.tile(g, (5, 1))
    cases["opposite"] = np.stack([g, -g, rng.normal(size=30)])
    cases["zero-gradient"] = np.vstack([rng.normal(size=(4, 30)), np.zeros((1, 30))])
    cases["dominant"] = np.vstack([1000 * rng.normal(size=(1, 30)), rng.normal(size=(5, 30))])
    return cases


CASES = jacobians()


@pytest.mark.parametrize("name", sorted(CASES))
def test_min_norm_point_matches_independent_qp(name):
    j = CASES[name]
    gram = j @ j.T
    gram /= np.diag(gram).max()
    alpha, converged = min_norm_weights(torch.from_numpy(gram))
    a = alpha.numpy()
    assert converged
    assert np.all(a >= 0) and a.sum() == pytest.approx(1, abs=1e-12)
    ref = scipy_min_norm(gram)
    # within 1e-6 absolutely and relatively: some optima (the dominant case) are themselves ~1e-7
    tol = 1e-6 * min(1.0, max(ref @ gram @ ref, 1e-12))
    assert a @ gram @ a <= ref @ gram @ ref + max(tol, 1e-13)
    assert a @ gram @ a >= ref @ gram @ ref - 1e-6
    # KKT certificate: no vertex improves, (Gα)_i ≥ αᵀGα, with equality on the support
    grad = gram @ a
    assert np.all(grad >= a @ grad - 1e-9)
    assert np.allclose(grad[a > 1e-9], a @ grad, atol=1e-7)


def test_degenerate_cases_have_their_known_solutions():
    g = CASES["opposite"]
    a = min_norm_weights(torch.from_numpy(g @ g.T))[0].numpy()
    assert np.linalg.norm(a @ g) < 1e-6  # g and −g: 0 is in the hull
    z = CASES["zero-gradient"]
    a = min_norm_weights(torch.from_numpy(z @ z.T))[0].numpy()
    assert np.linalg.norm(a @ z) < 1e-9
    same = CASES["identical"]
    a = min_norm_weights(torch.from_numpy(same @ same.T))[0].numpy()
    assert np.allclose(a @ same, same[0])


@pytest.mark.parametrize("seed", range(5))
def test_two_task_closed_form(seed):
    rng = np.random.default_rng(seed)
    g1, g2 = rng.normal(size=(2, 7))
    if seed % 2:
        g2 = -0.5 * g1 + 0.3 * rng.normal(size=7)  # conflicting pair
    if seed == 4:
        g2 = 3 * g1 + 0.01 * rng.normal(size=7)  # g1ᵀg2 ≥ ‖g1‖²: the solution is the vertex g1
    gram = torch.tensor([[g1 @ g1, g1 @ g2], [g1 @ g2, g2 @ g2]], dtype=torch.float64)
    alpha = min_norm_weights(gram)[0].numpy()
    expected = np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0, 1)
    assert alpha == pytest.approx([expected, 1 - expected], abs=1e-12)
    grid = np.linspace(0, 1, 100001)
    norms = np.linalg.norm(grid[:, None] * g1 + (1 - grid[:, None]) * g2, axis=1)
    assert np.linalg.norm(alpha[0] * g1 + alpha[1] * g2) <= norms.min() + 1e-9
    if seed == 4:
        assert alpha.tolist() == [1.0, 0.0]


def test_normalizations_follow_the_authors_code():
    sq = torch.tensor([4.0, 9.0, 1.0], dtype=torch.float64)
    losses = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    assert gradient_normalizers(sq, losses, "none").tolist() == [1, 1, 1]
    assert gradient_normalizers(sq, losses, "l2").tolist() == [2, 3, 1]
    assert gradient_normalizers(sq, losses, "loss").tolist() == [0.5, 2, 1]
    assert gradient_normalizers(sq, losses, "loss+").tolist() == [1, 6, 1]


def test_l2_normalization_solves_on_unit_gradients():
    rng = np.random.default_rng(3)
    j = rng.normal(size=(4, 12)) * np.array([[100.0], [1.0], [0.01], [5.0]])
    unit = j / np.linalg.norm(j, axis=1, keepdims=True)
    alpha = mgda_weights(torch.from_numpy(j @ j.T), torch.ones(4, dtype=torch.float64), "l2")[0]
    expected = min_norm_weights(torch.from_numpy(unit @ unit.T))[0]
    assert torch.allclose(alpha, expected, atol=1e-9)


def test_step_applies_T_alpha_to_the_raw_gradients():
    rng = np.random.default_rng(1)
    j = torch.from_numpy(rng.normal(size=(5, 40)))
    losses = torch.rand(5, dtype=torch.float64) + 0.1
    m = MGDA([f"t{i}" for i in range(5)], MGDAParams(normalization="loss+"))
    out = m.step(StepContext(losses, 0, 0, grads=j))
    alpha = mgda_weights(j @ j.T, losses, "loss+")[0]
    assert torch.allclose(out.weights, 5 * alpha)
    assert out.weights.sum().item() == pytest.approx(5)
    assert torch.allclose(out.shared_grad, out.weights @ j)
    assert MGDA.weight_scale == "sum-to-T"


@pytest.mark.parametrize("cls", [MGDA, MGDAUB])
def test_default_normalization_is_the_authors_loss_plus(cls):
    """The authors' CelebA config (sample.json: normalization_type "loss+") is the default of both."""
    assert MGDAParams().normalization == "loss+"
    rng = np.random.default_rng(2)
    j = torch.from_numpy(rng.normal(size=(4, 30)) * np.array([[10.0], [1.0], [0.1], [3.0]]))
    losses = torch.tensor([0.2, 1.5, 0.7, 3.0], dtype=torch.float64)
    out = cls(list("abcd")).step(StepContext(losses, 0, 0, grads=j))
    assert torch.allclose(out.weights, 4 * mgda_weights(j @ j.T, losses, "loss+")[0])
    unnormalized = 4 * mgda_weights(j @ j.T, losses, "none")[0]
    assert not torch.allclose(out.weights, unnormalized)  # the old default is a different method
    explicit = cls(list("abcd"), MGDAParams(normalization="none")).step(StepContext(losses, 0, 0, grads=j))
    assert torch.allclose(explicit.weights, unnormalized)


@pytest.mark.parametrize("method", ["mgda", "mgda-ub"])
def test_the_changed_default_is_a_new_cell(method):
    """The run identity holds the resolved hyperparameters: the default is the explicit "loss+",
    and the old default "none" is another cell (no version bump needed)."""
    cfg = replace(build_config("smoke"), method=method)
    assert cfg.hashed_fields()["method_params"] == {"normalization": "loss+"}
    assert cfg.config_hash() == replace(cfg, method_params={"normalization": "loss+"}).config_hash()
    assert cfg.config_hash() != replace(cfg, method_params={"normalization": "none"}).config_hash()


def test_a_stored_run_of_the_old_default_is_not_reused(tmp_path, toy_bundle):
    """A run stored with normalization "none" (the default before) is skipped on a rerun of
    "none", but a run with today's default trains its own cell."""
    cfg = cpu_smoke_config(method="mgda-ub", epochs=1, batch_size=32)
    old = replace(cfg, method_params={"normalization": "none"})
    with ResultsStore(tmp_path / "r.sqlite") as s:
        first = train_run(old, toy_bundle, s, {}, model_factory=tiny_model)
        assert first.status == "complete"
        assert train_run(old, toy_bundle, s, {}, model_factory=tiny_model).status == "skipped"
        new = train_run(cfg, toy_bundle, s, {}, model_factory=tiny_model)
        assert new.status == "complete" and new.run_id != first.run_id
        explicit = train_run(
            replace(cfg, method_params={"normalization": "loss+"}), toy_bundle, s, {}, model_factory=tiny_model
        )
        assert explicit.status == "skipped" and explicit.run_id == new.run_id


@pytest.mark.parametrize("normalization", ["none", "loss+"])
def test_identical_gradients_give_ew(normalization):
    j = torch.randn(1, 30, dtype=torch.float64).repeat(4, 1)
    out = MGDA(list("abcd"), MGDAParams(normalization=normalization)).step(
        StepContext(torch.ones(4, dtype=torch.float64), 0, 0, grads=j)
    )
    assert torch.allclose(out.weights, torch.ones(4, dtype=torch.float64))
    assert torch.allclose(out.shared_grad, j.sum(0))


@pytest.mark.parametrize("cls", [MGDA, MGDAUB])
def test_nan_and_zero_gradients_are_left_out_and_counted(cls):
    j = torch.randn(4, 30, dtype=torch.float64)
    j[1, 3] = float("nan")
    j[2] = 0.0
    m = cls(list("abcd"), MGDAParams(normalization="l2"))
    out = m.step(StepContext(torch.ones(4, dtype=torch.float64), 0, 0, grads=j))
    assert torch.isfinite(out.weights).all() and torch.isfinite(out.shared_grad).all()
    assert out.weights[1] == 0 and out.weights[2] == 0
    keep = [0, 3]
    sub = j[keep]
    expected = mgda_weights(sub @ sub.T, torch.ones(2, dtype=torch.float64), "l2")[0]
    assert torch.allclose(out.weights[keep], 4 * expected)  # solved on the usable tasks, scaled by T
    assert torch.allclose(out.shared_grad, out.weights[keep] @ sub)
    d = m.diagnostics()
    assert d["nonfinite_grad_rows"] == 1 and d["zero_grad_rows"] == 1


def test_no_usable_gradient_gives_a_zero_update():
    m = MGDA(list("ab"), MGDAParams(normalization="loss"))
    j = torch.randn(2, 10, dtype=torch.float64)
    j[0] = float("nan")
    out = m.step(StepContext(torch.tensor([0.0, 1.0], dtype=torch.float64), 0, 0, grads=j))  # L_b fine, L_a = 0
    out2 = m.step(StepContext(torch.tensor([1.0, 0.0], dtype=torch.float64), 1, 0, grads=j))
    assert out.weights.tolist() == [0.0, 2.0] and torch.allclose(out.shared_grad, 2 * j[1])
    assert out2.weights.tolist() == [0.0, 0.0] and out2.shared_grad.abs().sum() == 0
    d = m.diagnostics()
    assert d["nonfinite_grad_rows"] == 2 and d["invalid_normalizer_rows"] == 1 and d["no_usable_task_steps"] == 1


def test_registration_and_bad_params():
    assert METHODS.get("mgda") is MGDA and METHODS.get("mgda-ub") is MGDAUB
    assert MGDA.needs == "shared_params" and MGDAUB.needs == "shared_features"
    with pytest.raises(UserError, match="normalization"):
        MGDA(list("ab"), MGDAParams(normalization="l1"))


@pytest.mark.parametrize("name", ["mgda", "mgda-ub"])
def test_end_to_end_run(tiny_run, toy_bundle, name):
    run = tiny_run(name)
    run.assert_complete()
    weights, diag = run.weights, run.diagnostics
    run.per_step_epoch_means(len(toy_bundle.train.labels) // 16)
    steps = run.steps()
    for step in steps | {-1}:  # T·α every step, and their epoch mean
        assert sum(r["weight"] for r in weights if r["step"] == step) == pytest.approx(14, rel=1e-5)
    assert diag["nonfinite_update_steps"] == 0


def test_a_task_without_labels_is_left_out_as_on_the_present_tasks_alone():
    """Missing labels: the absent task's zero gradient row gets weight 0 and is counted; the rest is the method on
    the present tasks (tests/gramian_cases.py)."""
    from tests.gramian_cases import assert_absent_task_left_out

    assert_absent_task_left_out(MGDA, None, scale=4 / 3)
