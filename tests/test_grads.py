"""The per-task gradient engine: batched equals loop, in every space, BatchNorm in train mode."""

import pytest
import torch

from mtlbench.grads import apply_shared_gradient, per_task_gradients, resolve_engine
from mtlbench.model import ModelSpec, MultiTaskResNet, per_task_losses


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = MultiTaskResNet(ModelSpec(num_tasks=14, head="bce")).double().train()
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


def test_auto_engine_is_loop_on_cpu_and_batched_on_cuda():
    assert resolve_engine("auto", torch.device("cpu")) == "loop"
    assert resolve_engine("auto", torch.device("cuda")) == "batched"
    assert resolve_engine("batched", torch.device("cpu")) == "batched"
    with pytest.raises(ValueError, match="unknown gradient engine"):
        resolve_engine("fast", torch.device("cpu"))
