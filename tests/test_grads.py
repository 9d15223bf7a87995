"""The per-task gradient engine and the gradient spaces: batched equals loop, in every space,
BatchNorm in train mode; a space maps an aggregate back; a new space is one class."""

import pytest
import torch

from mtlbench.grads import resolve_engine
from mtlbench.model import ModelSpec, MultiTaskNet, per_task_losses
from mtlbench.spaces import space


def per_task_gradients(losses, need, model, features, engine):
    return space(need).per_task_gradients(losses, model, features, engine)


def apply_shared_gradient(need, shared_grad, model, features):
    space(need).apply_shared_grad(shared_grad, model, features)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = MultiTaskNet(ModelSpec(num_tasks=14, head="bce")).double().train()
    x = torch.randn(6, 1, 32, 32, dtype=torch.float64)
    y = (torch.rand(6, 14) < 0.4).double()
    features, logits = model(x)
    return model, features, per_task_losses(logits, y, "bce")


@pytest.mark.parametrize("need", ["shared_params", "shared_features", "last_shared_layer"])
def test_batched_equals_loop(setup, need):
    model, features, losses = setup
    batched = per_task_gradients(losses, need, model, features, "batched")
    loop = per_task_gradients(losses, need, model, features, "loop")
    assert batched.shape == loop.shape and batched.shape[0] == 14
    rel = (batched - loop).norm() / loop.norm()
    assert rel < 1e-5


def test_rows_are_single_task_gradients(setup):
    model, features, losses = setup
    j = per_task_gradients(losses, "last_shared_layer", model, features, "batched")
    (g3,) = torch.autograd.grad(losses[3], model.last_shared_layer(), retain_graph=True)
    assert torch.allclose(j[3], g3.reshape(-1))


def test_applying_the_sum_equals_backward_of_the_sum(setup):
    model, features, losses = setup
    j = per_task_gradients(losses, "shared_params", model, features, "batched")
    apply_shared_gradient("shared_params", j.sum(0), model, features)
    applied = [p.grad.clone() for p in model.shared_parameters()]
    expected = torch.autograd.grad(losses.sum(), model.shared_parameters(), retain_graph=True)
    for a, e in zip(applied, expected):
        assert torch.allclose(a, e, atol=1e-10)
    model.zero_grad(set_to_none=True)


def test_auto_engine_is_batched_only_on_cuda_for_small_spaces():
    """The choice measured on the H100 and the 2-core CPU (docs/step_cost_h100.md, step_cost_cpu.md)."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for need in ("shared_params", "shared_features", "last_shared_layer", "losses"):
        assert resolve_engine("auto", cpu, space(need).small) == "loop"
    assert (
        resolve_engine("auto", cuda, space("shared_params").small) == "loop"
    )  # whole trunk: loop faster, 3.5× less memory
    assert resolve_engine("auto", cuda, space("shared_features").small) == "batched"
    assert resolve_engine("auto", cuda, space("last_shared_layer").small) == "batched"
    assert resolve_engine("loop", cuda, space("shared_features").small) == "loop"  # an explicit choice is kept
    assert resolve_engine("batched", torch.device("cpu")) == "batched"
    with pytest.raises(ValueError, match="unknown gradient engine"):
        resolve_engine("fast", torch.device("cpu"))


def test_channels_last_parameters_keep_the_flat_order_and_their_layout() -> None:
    """On CUDA the model is channels_last: the Jacobian's flat order must still be the logical order
    that apply_shared_gradient maps back, and the applied .grad must have the parameter's layout."""
    torch.manual_seed(0)
    model = MultiTaskNet(ModelSpec(14, "bce")).double().to(memory_format=torch.channels_last)
    x = torch.randn(4, 1, 32, 32, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(4, 14) < 0.3).double()
    features, logits = model(x)
    losses = per_task_losses(logits, y, "bce")
    for engine in ("loop", "batched"):
        jacobian = per_task_gradients(losses, "shared_params", model, features, engine)
        expected = torch.autograd.grad(losses[3], model.shared_parameters(), retain_graph=True)
        assert torch.allclose(jacobian[3], torch.cat([g.reshape(-1) for g in expected]))
    apply_shared_gradient("shared_params", jacobian[3], model, features)
    for p, g in zip(model.shared_parameters(), expected):
        assert torch.allclose(p.grad, g)
        if p.dim() == 4:
            assert p.grad.is_contiguous(memory_format=torch.channels_last)


def test_a_sweep_resolves_the_auto_engine_per_method_not_once(monkeypatch, tmp_path) -> None:
    """On CUDA, auto is batched for MGDA-UB but loop for MGDA: a sweep must not resolve it once
    for its first method and hand that to all (the bug the H100 run exposed)."""
    from dataclasses import replace

    from conftest import make_bundle
    from mtlbench import sweep
    from mtlbench.config import build_config

    cells = []
    monkeypatch.setattr(sweep, "load_dataset", lambda config, progress: make_bundle())
    monkeypatch.setattr(sweep, "warm_up", lambda *a, **k: None)
    monkeypatch.setattr(sweep, "train_run", lambda cell, *a, **k: cells.append(cell))
    base = replace(build_config("smoke"), device="cpu", grad_engine="auto")
    plan = sweep.SweepPlan(base, ["ew", "mgda", "mgda-ub"], [0], {})
    sweep.run_sweep(plan, tmp_path / "r.sqlite", display=None)
    assert [(c.method, c.grad_engine) for c in cells] == [("ew", "auto"), ("mgda", "auto"), ("mgda-ub", "auto")]


def test_a_new_gradient_space_is_one_class(monkeypatch) -> None:
    """A space no built-in method uses (the first trunk layer's weight) is one subclass, registered;
    a method that declares it gets its (T, P) gradients and passes the conformance check, with no
    other module edited."""
    from mtlbench import spaces
    from mtlbench.conformance import check_method
    from mtlbench.methods.base import Method, StepOutput

    class FirstLayer(spaces.GradientSpace):
        name = "first_layer"
        description = "gradient (first trunk layer)"

        def tensors(self, model, features):
            return [model.trunk[0].weight]

    monkeypatch.setitem(spaces.SPACES, "first_layer", FirstLayer())
    seen = []

    class NormBalance(Method):
        """Weights ∝ 1/‖∇_W L_t‖ at the first layer, scaled to sum to T."""

        needs = "first_layer"

        def step(self, ctx):
            seen.append(ctx.grads.shape)
            inverse = 1 / ctx.grads.norm(dim=1).clamp_min(1e-12)
            return StepOutput(weights=(inverse * len(inverse) / inverse.sum()).to(ctx.losses.dtype))

    check_method(NormBalance)
    assert seen and all(shape == (5, 12 * 8) for shape in seen)  # T × the first layer's 8×12 weight
