"""The jd-* methods (methods/torchjd_adapter.py): torchjd's weightings under this harness, with the adapter's
two conventions (weights × T where torchjd normalises like its Mean; randomness from the method's generator)."""

from __future__ import annotations

import pytest
import torch

torchjd = pytest.importorskip("torchjd")  # the optional extra: pip install -e '.[torchjd]' (CI installs it)

from mtlbench.methods.base import StepContext  # noqa: E402
from mtlbench.plan import method_sets  # noqa: E402
from mtlbench.registry import METHODS  # noqa: E402

TASKS = ("a", "b", "c")
ADAPTERS = [
    "jd-upgrad",
    "jd-dualproj",
    "jd-imtl-g",
    "jd-aligned-mtl",
    "jd-mgda",
    "jd-pcgrad",
    "jd-cagrad",
    "jd-fairgrad",
]


def _step(name: str, jacobian: torch.Tensor, seed: int = 0):
    method = METHODS.get(name)(TASKS[: len(jacobian)], generator=torch.Generator().manual_seed(seed))
    losses = torch.ones(len(jacobian))
    return method, method.step(StepContext(losses=losses, step=0, epoch=0, grads=jacobian))


def test_every_adapter_is_registered_in_its_own_set():
    assert method_sets()["torchjd"] == tuple(sorted(ADAPTERS))
    assert not set(ADAPTERS) & set(method_sets()["all"])


@pytest.mark.parametrize("name", ADAPTERS)
def test_orthonormal_gradients_get_the_weights_of_ew(name):
    """With T orthonormal gradients every method here reduces to equal weighting: weights 1, the sum of the
    gradients, as EW's (CAGrad: 1 + c, its step beyond the mean; see the module docstring)."""
    expected = 1.4 if name == "jd-cagrad" else 1.0
    _, out = _step(name, torch.eye(3))
    assert torch.allclose(out.weights.double(), torch.full((3,), expected, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(out.shared_grad.double(), torch.full((3,), expected, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("name", ["jd-upgrad", "jd-mgda", "jd-imtl-g"])
def test_the_weights_are_torchjds_times_t(name):
    from torchjd import aggregation as jd

    weighting = {"jd-upgrad": jd.UPGradWeighting, "jd-mgda": jd.MGDAWeighting, "jd-imtl-g": jd.IMTLGWeighting}[name]
    jacobian = torch.randn(3, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _, out = _step(name, jacobian.float())
    gram = (jacobian.float() @ jacobian.float().T).double()
    assert torch.allclose(out.weights.double(), 3 * weighting()(gram), rtol=1e-5, atol=1e-7)


def test_pcgrad_draws_its_orders_from_the_methods_generator_not_the_global_rng():
    jacobian = torch.tensor([[1.0, 0.0], [-0.9, 0.3], [0.2, -1.0]])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    _, a = _step("jd-pcgrad", jacobian, seed=5)
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is untouched
    _, b = _step("jd-pcgrad", jacobian, seed=5)
    assert torch.equal(a.weights, b.weights)  # and the same generator gives the same orders
