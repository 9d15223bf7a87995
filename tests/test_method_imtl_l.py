"""IMTL-L: the scaled-loss objective, its optimum s = −log L, its relation to uncertainty weighting, a tiny run."""

import io
import math

import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.imtl_l import IMTLL, imtl_l_objective
from mtlbench.methods.uncertainty import uncertainty_objective
from mtlbench.registry import METHODS
from tests.learned_scales import assert_starts_as_equal_weighting, set_parameter, train_alone

TASKS = ("a", "b", "c")
LOSSES = (0.5, 2.0, 0.05)
SCALES = (0.0, -1.0, 0.7)


def method_with(scales=SCALES) -> IMTLL:
    return set_parameter(IMTLL(TASKS), "scale_", scales)


def test_starts_as_equal_weighting_with_learnable_scales():
    assert_starts_as_equal_weighting(IMTLL(TASKS), "scale_", LOSSES)
    assert METHODS.get("imtl-l") is IMTLL


def test_objective_value_and_gradients_by_hand():
    m = method_with()
    losses = torch.tensor(LOSSES, requires_grad=True)
    out = m.step(StepContext(losses, 0, 0))
    assert out.objective.item() == pytest.approx(sum(math.exp(s) * L - s for L, s in zip(LOSSES, SCALES)), rel=1e-6)
    out.objective.backward()
    assert m.scale_.grad.tolist() == pytest.approx([math.exp(s) * L - 1 for L, s in zip(LOSSES, SCALES)], rel=1e-5)
    assert losses.grad.tolist() == pytest.approx([math.exp(s) for s in SCALES], rel=1e-6)
    assert out.weights.tolist() == pytest.approx([math.exp(s) for s in SCALES], rel=1e-6)
    assert not out.weights.requires_grad


def test_the_optimum_s_is_minus_log_L_where_every_scaled_loss_is_one():
    s = torch.tensor([-math.log(L) for L in LOSSES], dtype=torch.float64, requires_grad=True)
    losses = torch.tensor(LOSSES, dtype=torch.float64)
    imtl_l_objective(losses, s).backward()
    assert s.grad.abs().max().item() < 1e-12  # e^s L − 1 = 0
    assert (torch.exp(s.detach()) * losses).tolist() == pytest.approx([1.0] * 3, rel=1e-12)
    for shift in (-0.1, 0.1):  # a strict minimum: e^s L − s is convex in s
        assert imtl_l_objective(losses, s.detach() + shift).item() > imtl_l_objective(losses, s.detach()).item()


def test_training_s_alone_reaches_minus_log_L_and_scaled_losses_of_one():
    m = IMTLL(TASKS)
    weights = train_alone(m, LOSSES, steps=3000)
    assert m.scale_.tolist() == pytest.approx([-math.log(L) for L in LOSSES], abs=1e-4)
    assert (weights * torch.tensor(LOSSES)).tolist() == pytest.approx([1.0] * 3, rel=1e-3)


def test_equals_uncertainty_weighting_at_the_negated_parameter():
    """Σ e^s L − s is uncertainty weighting's Σ e^(−s') L + s' at s' = −s (ρ = 1, methods/uncertainty.py)."""
    losses, s = torch.tensor(LOSSES, dtype=torch.float64), torch.tensor(SCALES, dtype=torch.float64)
    assert imtl_l_objective(losses, s).item() == pytest.approx(uncertainty_objective(losses, -s, 1.0).item(), rel=1e-12)


def test_matches_torchjd_imtl_l():
    scalarization = pytest.importorskip("torchjd.scalarization")
    reference = scalarization.IMTLL(3)
    with torch.no_grad():
        reference.log_scale.copy_(torch.tensor(SCALES))
    ours = method_with()
    a, b = torch.tensor(LOSSES, requires_grad=True), torch.tensor(LOSSES, requires_grad=True)
    mine, theirs = ours.step(StepContext(a, 0, 0)).objective, reference(b)
    (mine + theirs).backward()
    assert mine.item() == pytest.approx(theirs.item(), rel=1e-6)
    assert a.grad.tolist() == pytest.approx(b.grad.tolist(), rel=1e-6)
    assert ours.scale_.grad.tolist() == pytest.approx(reference.log_scale.grad.tolist(), rel=1e-6)


def test_checkpoint_round_trip_keeps_the_scales():
    m = method_with()
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    fresh = IMTLL(TASKS)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    ctx = StepContext(torch.tensor(LOSSES), 5, 1)
    assert torch.equal(fresh.step(ctx).weights, m.step(ctx).weights)


def test_weights_follow_the_losses_dtype():
    out = IMTLL(TASKS).step(StepContext(torch.tensor(LOSSES, dtype=torch.float64), 0, 0))
    assert out.weights.dtype == out.objective.dtype == torch.float64


def test_hyperparameters_are_refused():
    with pytest.raises(UserError, match="unknown hyperparameter"):
        IMTLL.make_params({"init_scale": 0.0})


def test_tiny_training_run(tiny_run, toy_bundle):
    run = tiny_run("imtl-l", epochs=2)
    run.assert_complete()
    steps = 2 * (len(toy_bundle.train) // 16)
    per_step = run.per_step()
    assert sorted(per_step) == list(range(steps)) and per_step[0] == [1.0] * 14  # e^0 at the first step
    assert all(w > 0 and math.isfinite(w) for ws in per_step.values() for w in ws)
    assert per_step[steps - 1] != [1.0] * 14  # the scales moved


def test_a_task_without_labels_is_left_out_and_its_scale_gets_no_gradient():
    m = method_with()  # s = (0, −1, 0.7)
    losses = torch.tensor((0.5, 2.0, 0.0), requires_grad=True)  # task c: no labelled image in the batch
    out = m.step(StepContext(losses, 0, 0, labelled=torch.tensor([3, 1, 0])))
    assert out.objective.item() == pytest.approx(0.5 + math.exp(-1.0) * 2.0 + 1.0, rel=1e-6)
    out.objective.backward()
    assert m.scale_.grad.tolist() == pytest.approx([0.5 - 1.0, math.exp(-1.0) * 2.0 - 1.0, 0.0], rel=1e-6)
    assert m.scale_.grad[2].item() == 0.0  # without the mask: −s_c alone would push s_c up (∂ = −1)
    assert losses.grad.tolist() == pytest.approx([1.0, math.exp(-1.0), 0.0], rel=1e-6)
