"""DWA: weights from hand-made epoch losses, the first two epochs, the guard, one tiny run."""

import math

import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import EpochStats, StepContext
from mtlbench.methods.dwa import DynamicWeightAverage
from mtlbench.methods.params import DWAParams

TASKS = ("a", "b", "c", "d")


def epoch(index: int, train_loss) -> EpochStats:
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    n = len(train_loss)
    return EpochStats(index, t(train_loss), t((0.5,) * n), t((0.3,) * n), t((0.5,) * n), t((0.7,) * n))


def weights(m: DynamicWeightAverage) -> list[float]:
    return m.step(StepContext(torch.ones(len(m.task_names), dtype=torch.float64), 0, 0)).weights.tolist()


def by_hand(last, before_last, temperature=2.0) -> list[float]:
    """K·exp(r_k/T) / Σ exp(r_i/T), r = last / before_last, in plain Python."""
    e = [math.exp(a / b / temperature) for a, b in zip(last, before_last)]
    return [len(e) * x / sum(e) for x in e]


def test_first_two_epochs_are_all_ones():
    m = DynamicWeightAverage(TASKS)
    assert weights(m) == [1.0] * 4  # epoch 0
    m.end_epoch(epoch(0, (1.0, 2.0, 0.5, 1.0)))
    assert weights(m) == [1.0] * 4  # epoch 1: only one epoch of losses so far
    assert not m.weights_changed_per_step() and DynamicWeightAverage.weight_scale == "sum-to-T"


def test_third_epoch_weights_by_hand():
    m = DynamicWeightAverage(TASKS)
    m.end_epoch(epoch(0, (1.0, 2.0, 0.5, 1.0)))
    m.end_epoch(epoch(1, (0.5, 2.0, 0.5, 1.5)))  # ratios 0.5, 1, 1, 1.5
    w = weights(m)
    e = [math.exp(0.25), math.exp(0.5), math.exp(0.5), math.exp(0.75)]
    assert w == pytest.approx([4 * x / sum(e) for x in e], rel=1e-12)
    assert sum(w) == pytest.approx(4.0)
    assert w[0] < w[1] and w[1] == pytest.approx(w[2]) and w[2] < w[3]  # most improved gets least


def test_each_epoch_uses_the_last_two_epochs_only():
    m = DynamicWeightAverage(TASKS)
    history = [(1.0, 2.0, 0.5, 1.0), (0.5, 2.0, 0.5, 1.5), (0.4, 1.0, 0.6, 1.5)]
    for i, losses in enumerate(history):
        m.end_epoch(epoch(i, losses))
    assert weights(m) == pytest.approx(by_hand(history[2], history[1]), rel=1e-12)
    assert sum(weights(m)) == pytest.approx(4.0)


def test_temperature():
    m = DynamicWeightAverage(TASKS, DWAParams(temperature=0.5))
    m.end_epoch(epoch(0, (1.0, 1.0, 1.0, 1.0)))
    m.end_epoch(epoch(1, (0.2, 0.4, 0.6, 0.8)))
    assert weights(m) == pytest.approx(by_hand((0.2, 0.4, 0.6, 0.8), (1.0,) * 4, 0.5), rel=1e-12)
    flat = DynamicWeightAverage(TASKS, DWAParams(temperature=1e6))
    flat.end_epoch(epoch(0, (1.0, 1.0, 1.0, 1.0)))
    flat.end_epoch(epoch(1, (0.2, 0.4, 0.6, 0.8)))
    assert weights(flat) == pytest.approx([1.0] * 4, abs=1e-5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1.0])
def test_bad_epoch_loss_skips_the_update(bad):
    m = DynamicWeightAverage(TASKS)
    m.end_epoch(epoch(0, (1.0, 2.0, 0.5, 1.0)))
    m.end_epoch(epoch(1, (0.5, 2.0, 0.5, 1.5)))
    before = weights(m)
    m.end_epoch(epoch(2, (0.4, bad, 0.6, 1.5)))  # bad as numerator
    assert weights(m) == before
    m.end_epoch(epoch(3, (0.3, 1.0, 0.6, 1.5)))  # bad as denominator
    assert weights(m) == before and all(math.isfinite(w) for w in weights(m))
    assert m.diagnostics() == {"skipped_updates": 2.0}
    m.end_epoch(epoch(4, (0.3, 0.5, 0.6, 1.5)))  # recovers with two good epochs
    assert weights(m) == pytest.approx(by_hand((0.3, 0.5, 0.6, 1.5), (0.3, 1.0, 0.6, 1.5)), rel=1e-12)


def test_weights_follow_the_losses_dtype():
    m = DynamicWeightAverage(TASKS)
    out = m.step(StepContext(torch.ones(4, dtype=torch.float32), 0, 0))
    assert out.weights.dtype == torch.float32 and out.objective is None


@pytest.mark.parametrize("t", [0.0, -2.0, float("nan")])
def test_bad_temperature_is_a_user_error(t):
    with pytest.raises(UserError, match="temperature"):
        DynamicWeightAverage(TASKS, DWAParams(temperature=t))


def test_tiny_training_run(tiny_run):
    run = tiny_run("dwa", epochs=3)  # three epochs so that the weights of the third come from the first two
    run.assert_complete()
    assert {r["step"] for r in run.weights} == {-1}  # fixed within an epoch: epoch means only
    rows = sorted(run.weights, key=lambda r: (r["epoch"], r["task"]))
    by_epoch = {e: [r["weight"] for r in rows if r["epoch"] == e] for e in range(3)}
    assert by_epoch[0] == by_epoch[1] == [1.0] * 14
    assert sum(by_epoch[2]) == pytest.approx(14.0) and by_epoch[2] != [1.0] * 14
    with run.store() as store:
        train = store.query(
            "SELECT epoch, task, loss FROM metrics WHERE run_id=? AND split='train' ORDER BY task", (run.out.run_id,)
        )
    l0 = [r["loss"] for r in train if r["epoch"] == 0]
    l1 = [r["loss"] for r in train if r["epoch"] == 1]
    assert by_epoch[2] == pytest.approx(by_hand(l1, l0), rel=1e-5)


def test_a_task_without_labels_in_an_epoch_keeps_its_weight_and_the_others_share_the_rest():
    m = DynamicWeightAverage(TASKS)
    nan = float("nan")
    labelled = torch.tensor([10.0, 0.0, 10.0, 10.0])  # b: no label in the second epoch (NaN loss)
    m.end_epoch(epoch(0, (1.0, 0.8, 0.5, 2.0)))
    m.end_epoch(EpochStats(**{**vars(epoch(1, (0.5, nan, 0.5, 1.0))), "labelled": labelled}))
    assert weights(m) == pytest.approx([*by_hand((0.5, 0.5, 1.0), (1.0, 0.5, 2.0))[:1], 1.0,
                                        *by_hand((0.5, 0.5, 1.0), (1.0, 0.5, 2.0))[1:]], rel=1e-12)  # fmt: skip
    assert sum(weights(m)) == pytest.approx(4.0) and m.diagnostics() == {"skipped_updates": 0.0}
