"""RLW: random weights on the scaled simplex, reproducible from the method's own generator."""

import math

import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.rlw import RandomLossWeighting, draw_logits
from mtlbench.methods.params import RLWParams
from mtlbench.tasks import TASK_NAMES

T = len(TASK_NAMES)


def method(seed: int = 0, **params) -> RandomLossWeighting:
    return RandomLossWeighting(TASK_NAMES, RLWParams(**params), generator=torch.Generator().manual_seed(seed))


def draws(m: RandomLossWeighting, n: int) -> list[list[float]]:
    losses = torch.ones(T, dtype=torch.float64)
    return [m.step(StepContext(losses, i, 0)).weights.tolist() for i in range(n)]


def test_weights_are_T_softmax_of_a_standard_normal_draw():
    z = torch.randn(T, generator=torch.Generator().manual_seed(3), dtype=torch.float64).tolist()
    e = [math.exp(v) for v in z]
    expected = [T * x / sum(e) for x in e]
    assert draws(method(3), 1)[0] == pytest.approx(expected, rel=1e-12)


def test_positive_sum_to_T_and_new_every_step():
    ws = draws(method(), 50)
    for w in ws:
        assert all(x > 0 for x in w) and sum(w) == pytest.approx(T)
    assert len({tuple(w) for w in ws}) == 50
    assert method().weights_changed_per_step() and RandomLossWeighting.weight_scale == "sum-to-T"


def test_same_seed_same_sequence_other_seed_other_sequence():
    assert draws(method(7), 10) == draws(method(7), 10)
    assert draws(method(7), 10) != draws(method(8), 10)


def test_draws_do_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    draws(method(), 5)
    assert torch.equal(torch.rand(3), expected)


def test_logits_are_standard_normal_over_many_draws():
    g = torch.Generator().manual_seed(0)
    z = torch.stack([draw_logits(g, T, 1.0) for _ in range(20_000)])  # 280k samples
    assert abs(z.mean().item()) < 0.01  # standard error ≈ 0.002
    assert z.std().item() == pytest.approx(1.0, abs=0.01)
    assert z.mean(0).abs().max().item() < 0.03  # every task centred (standard error ≈ 0.007)
    scaled = torch.stack([draw_logits(g, T, 0.5) for _ in range(2_000)])
    assert scaled.std().item() == pytest.approx(0.5, abs=0.02)


def test_zero_std_is_equal_weighting():
    assert draws(method(std=0.0), 3) == [[1.0] * T] * 3


def test_weights_follow_the_losses_dtype():
    out = method().step(StepContext(torch.ones(T, dtype=torch.float32), 0, 0))
    assert out.weights.dtype == torch.float32 and out.objective is None


@pytest.mark.parametrize("std", [-1.0, float("inf"), float("nan")])
def test_bad_std_is_a_user_error(std):
    with pytest.raises(UserError, match="std"):
        method(std=std)


def test_tiny_training_run(tiny_run, toy_bundle):
    run = tiny_run("rlw", epochs=2)
    run.assert_complete()
    steps = 2 * (len(toy_bundle.train) // 16)
    per_step = run.per_step()
    assert sorted(per_step) == list(range(steps)) and all(len(w) == 14 for w in per_step.values())
    assert all(sum(w) == pytest.approx(14.0, rel=1e-5) for w in per_step.values())
    assert len({tuple(w) for w in per_step.values()}) == steps
