"""deepchest-fixed: DeepChest's released rule iterated on majority-class accuracies, checked against DeepChest
itself and against the closed form on NIH's own prevalences; the refusals; one tiny run."""

import pytest
import torch

from mtlbench.datasets.nih_layout import parse_finding_labels
from mtlbench.datasets.nih_tables import TABLE_FILE, read_nih_table
from mtlbench.errors import UserError
from mtlbench.methods.base import EpochStats, StepContext
from mtlbench.methods.deepchest import DeepChest
from mtlbench.methods.deepchest_fixed import DeepChestFixed, deepchest_destination
from mtlbench.methods.params import DeepChestFixedParams
from mtlbench.tasks import TASK_NAMES


def test_nih_prevalences_give_the_four_frequent_findings_the_cap_and_the_rest_1_05_to_the_minus_15():
    """The destination the issue computed by simulating the released rule: 1.5 on Atelectasis, Effusion,
    Infiltration and Nodule (prevalence above the mean over tasks, 5.2%), 1.05⁻¹⁵ ≈ 0.481 on the other ten."""
    table = read_nih_table()
    labels = torch.from_numpy(parse_finding_labels(table["Finding Labels"], TABLE_FILE))
    weights = dict(zip(TASK_NAMES, deepchest_destination(labels, DeepChestFixedParams()).tolist()))
    capped = {"Atelectasis", "Effusion", "Infiltration", "Nodule"}
    for task, w in weights.items():
        assert w == pytest.approx(1.5 if task in capped else 1.05**-15, rel=1e-12), task
    assert 1.05**-15 == pytest.approx(0.481, abs=5e-4)


def test_the_destination_is_deepchests_own_updates_on_constant_accuracies():
    """DeepChest's end_epoch, fed each epoch the majority-class accuracy of the same labels, ends where this starts."""
    labels = torch.rand(500, 4, generator=torch.Generator().manual_seed(0)) < torch.tensor([0.4, 0.05, 0.2, 0.7])
    params = DeepChestFixedParams(epochs=7, increase_factor=1.2, max_weight=2.0, decay_factor=1.1, initial_weight=0.9)
    dynamic = DeepChest(tuple("abcd"), DeepChest.Params(initial_weight=0.9, increase_factor=1.2, max_weight=2.0,
                                                         decay_factor=1.1))  # fmt: skip
    prevalence = labels.double().mean(0)
    accuracy = torch.maximum(prevalence, 1 - prevalence)
    other = torch.full((4,), 0.5, dtype=torch.float64)
    for epoch in range(7):
        dynamic.end_epoch(EpochStats(epoch, other, accuracy, other, other, other))
    assert torch.allclose(deepchest_destination(labels, params), dynamic.weights_, rtol=1e-12)


def test_weights_are_fixed_from_the_first_step_and_a_rebind_gives_the_same():
    labels = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.uint8)  # prevalences .5 .25 0
    m = DeepChestFixed(tuple("abc"), DeepChestFixedParams(epochs=2))
    with pytest.raises(RuntimeError, match="bind_training_labels"):
        m.step(StepContext(torch.ones(3), 0, 0))
    m.bind_training_labels(labels)
    # majority accuracies .5, .75, 1 (mean .75): only a lags → 1.21; b and c → 1/1.05²
    expected = [1.21, 1.05**-2, 1.05**-2]
    assert m.step(StepContext(torch.ones(3), 0, 0)).weights.tolist() == pytest.approx(expected)
    m.bind_training_labels(labels)
    assert m.step(StepContext(torch.ones(3), 5, 3)).weights.tolist() == pytest.approx(expected)
    assert DeepChestFixed.weight_scale == "none" and not m.weights_changed_per_step()


@pytest.mark.parametrize(
    "params, message",
    [
        (DeepChestFixedParams(epochs=-1), "epochs must lie in 0"),
        (DeepChestFixedParams(decay_factor=0.9), "must be ≥ 1"),
        (DeepChestFixedParams(max_weight=0.0), "max_weight and initial_weight > 0"),
    ],
)
def test_bad_params(params, message):
    with pytest.raises(UserError, match=message):
        DeepChestFixed(tuple("ab"), params)


def test_tiny_training_run_logs_the_destination_every_epoch(tiny_run, toy_bundle):
    run = tiny_run("deepchest-fixed", epochs=2)
    run.assert_complete()
    expected = deepchest_destination(torch.from_numpy(toy_bundle.train.labels), DeepChestFixedParams()).tolist()
    for epoch in (0, 1):
        logged = {r["task"]: r["weight"] for r in run.weights if r["epoch"] == epoch}
        assert [logged[t] for t in TASK_NAMES] == pytest.approx(expected, rel=1e-6)  # logged as the losses (fp32)


def test_missing_labels_the_prevalence_is_among_the_labelled_images():
    nan = float("nan")
    params = DeepChestFixedParams(epochs=2)
    labels = torch.tensor([[1, 0, nan], [1, nan, 0], [nan, 0, 1], [0, 1, 0]], dtype=torch.float32)
    complete = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 1]], dtype=torch.uint8)  # the same prevalences 2/3, 1/3, 1/3
    assert deepchest_destination(labels, params).tolist() == deepchest_destination(complete, params).tolist()
    assert torch.isfinite(deepchest_destination(torch.full((3, 2), nan), params)).all()  # a task never labelled
