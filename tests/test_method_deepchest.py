"""DeepChest's update rule, initialisation and signals, on hand-made per-task statistics."""

import json

import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import EpochStats, StepContext
from mtlbench.methods.deepchest import DeepChest, DeepChestParams, deepchest_update, lagging_tasks
from tests.tiny_model import tiny_model

TASKS = ("a", "b", "c", "d")


def stats(train_acc=(0.5,) * 4, val_acc=(0.5,) * 4, train_loss=(0.5,) * 4) -> EpochStats:
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return EpochStats(0, t(train_loss), t(train_acc), t((0.3,) * 4), t(val_acc), t((0.7,) * 4))


def test_lagging_is_strictly_below_the_mean():
    acc = torch.tensor([0.9, 0.7, 0.8, 0.8])  # mean 0.8: only 0.7 lags; 0.8 == mean does not
    assert lagging_tasks(acc, higher_is_better=True).tolist() == [False, True, False, False]
    loss = torch.tensor([1.0, 3.0, 2.0, 2.0])  # mean 2: only 3.0 lags
    assert lagging_tasks(loss, higher_is_better=False).tolist() == [False, True, False, False]


def test_update_closed_form():
    w = torch.tensor([1.0, 1.0, 1.45, 1.5], dtype=torch.float64)
    lag = torch.tensor([True, False, True, True])
    new = deepchest_update(w, lag, 1.1, 1.5, 1.05)
    assert new.tolist() == pytest.approx([1.1, 1 / 1.05, 1.5, 1.5])


def test_epoch_sequence_from_ones():
    m = DeepChest(TASKS)
    assert m.step(StepContext(torch.ones(4), 0, 0)).weights.tolist() == [1.0] * 4
    acc = (0.9, 0.6, 0.8, 0.9)  # mean 0.8: task b lags
    for _epoch in range(6):
        m.end_epoch(stats(train_acc=acc))
    expected_b = min(1.1**6, 1.5)  # 1.1^5 = 1.61 > 1.5: capped
    assert m.weights_[1].item() == pytest.approx(expected_b)
    assert m.weights_[0].item() == pytest.approx(1.05**-6)  # decays without a floor
    assert m.weights_[2].item() == pytest.approx(1.05**-6)  # 0.8 == mean is "not below"


def test_signals_pick_their_statistic():
    lagging_val = stats(train_acc=(0.9, 0.9, 0.9, 0.5), val_acc=(0.5, 0.9, 0.9, 0.9), train_loss=(0.1, 0.9, 0.1, 0.1))
    for signal, lagging in (("train-accuracy", 3), ("val-accuracy", 0), ("train-loss", 1)):
        m = DeepChest(TASKS, DeepChestParams(signal=signal))
        m.end_epoch(lagging_val)
        expected = [1.1 if t == lagging else 1 / 1.05 for t in range(4)]
        assert m.weights_.tolist() == pytest.approx(expected), signal


def test_constants_are_hyperparameters():
    m = DeepChest(TASKS, DeepChestParams(increase_factor=2.0, max_weight=3.0, decay_factor=2.0, initial_weight=1.0))
    m.end_epoch(stats(train_acc=(0.1, 0.9, 0.9, 0.9)))
    m.end_epoch(stats(train_acc=(0.1, 0.9, 0.9, 0.9)))
    assert m.weights_.tolist() == pytest.approx([3.0, 0.25, 0.25, 0.25])


def test_no_normalisation_declared():
    assert DeepChest.weight_scale == "none"
    assert DeepChest.needs == "losses"


def test_init_from_weights_file(tmp_path):
    f = tmp_path / "w.json"
    f.write_text(json.dumps({"a": 1.2, "b": 0.8, "c": 1.0, "d": 1.4}))
    m = DeepChest(TASKS, DeepChestParams(init_weights_file=str(f)))
    assert m.weights_.tolist() == pytest.approx([1.2, 0.8, 1.0, 1.4])
    f.write_text(json.dumps([1, 2, 3, 4]))
    assert DeepChest(TASKS, DeepChestParams(init_weights_file=str(f))).weights_.tolist() == [1, 2, 3, 4]


def test_init_from_single_task_accuracies(tmp_path):
    f = tmp_path / "acc.json"
    f.write_text(json.dumps({"a": 1.0, "b": 0.8, "c": 0.5, "d": 0.0}))
    m = DeepChest(TASKS, DeepChestParams(init_accuracies_file=str(f)))
    assert m.weights_.tolist() == pytest.approx([1.0, 1.1, 1.25, 1.5])  # w = 1 + (1 - acc) / 2


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "not readable JSON"),
        ('{"a": 1}', "missing tasks"),
        ("[1, 2]", "lists 2 values"),
        ('"x"', "object or list"),
    ],
)
def test_bad_init_files_are_user_errors(tmp_path, content, message):
    f = tmp_path / "w.json"
    f.write_text(content)
    with pytest.raises(UserError, match=message):
        DeepChest(TASKS, DeepChestParams(init_weights_file=str(f)))


def test_missing_file_and_bad_signal():
    with pytest.raises(UserError, match="not found"):
        DeepChest(TASKS, DeepChestParams(init_weights_file="/nonexistent/w.json"))
    with pytest.raises(UserError, match="unknown signal"):
        DeepChest(TASKS, DeepChestParams(signal="vibes"))
    with pytest.raises(UserError, match="unknown hyperparameter"):
        DeepChest.make_params({"increase": 2})


def test_tiny_training_run_follows_the_rule_on_stored_accuracies(tmp_path, toy_bundle):
    """End to end: epoch e+1's stored weights are the rule applied to epoch e's stored train accuracies."""
    from dataclasses import replace

    from mtlbench.config import build_config
    from mtlbench.results.store import ResultsStore
    from mtlbench.training import train_run

    cfg = replace(build_config("smoke"), device="cpu", epochs=3, batch_size=16, method="deepchest")
    with ResultsStore(tmp_path / "r.sqlite") as store:
        out = train_run(cfg, toy_bundle, store, {}, model_factory=tiny_model)
        assert out.status == "complete", out.detail
        q = "SELECT epoch, {col} AS v FROM {table} WHERE run_id=? {extra} ORDER BY epoch, task"
        w = store.query(q.format(col="weight", table="weights", extra="AND step=-1"), (out.run_id,))
        acc = store.query(q.format(col="accuracy", table="metrics", extra="AND split='train'"), (out.run_id,))
    by = lambda rows, e: torch.tensor([r["v"] for r in rows if r["epoch"] == e], dtype=torch.float64)  # noqa: E731
    assert by(w, 0).tolist() == [1.0] * 14
    params = DeepChestParams()
    for e in (0, 1):
        expected = deepchest_update(
            by(w, e),
            lagging_tasks(by(acc, e), higher_is_better=True),
            params.increase_factor,
            params.max_weight,
            params.decay_factor,
        )
        assert torch.allclose(by(w, e + 1), expected, atol=1e-12)


def test_init_stl_starts_from_the_single_task_accuracies():
    """The paper's STL initialisation, w = 1 + (1 − acc)/2, from the accuracies `mtlbench run` fills in."""
    m = DeepChest(TASKS, DeepChestParams(init="stl", stl_accuracies="0.9,0.5,1.0,0"))
    assert m.weights_.tolist() == pytest.approx([1.05, 1.25, 1.0, 1.5])


def test_init_authors_starts_from_the_authors_released_weights():
    """configs/xray_initial_weights_resnet_config.json of DeepChest-MTL, verbatim, in the task order asked for."""
    from mtlbench.tasks import TASK_NAMES

    m = DeepChest(TASK_NAMES, DeepChestParams(init="authors"))
    released = {"Atelectasis": 1.0102, "Cardiomegaly": 1.00535, "Consolidation": 1.0104, "Edema": 1.009,
                "Effusion": 1.013, "Emphysema": 1.006, "Fibrosis": 1.00715, "Hernia": 1.00055,
                "Infiltration": 1.08655, "Mass": 1.025, "Nodule": 1.0277, "Pleural_Thickening": 1.0142,
                "Pneumonia": 1.0059, "Pneumothorax": 1.0219}  # fmt: skip
    assert m.weights_.tolist() == [released[t] for t in TASK_NAMES]
    assert DeepChest(("Hernia", "Mass"), DeepChestParams(init="authors")).weights_.tolist() == [1.00055, 1.025]
    with pytest.raises(UserError, match="init=authors has weights for the 14 NIH findings only, not a, b, c, d"):
        DeepChest(TASKS, DeepChestParams(init="authors"))


@pytest.mark.parametrize(
    "params, message",
    [
        (DeepChestParams(init="stl"), "`mtlbench run` fills them in"),
        (DeepChestParams(init="stl", stl_accuracies="0.9,0.5"), "needs 4 accuracies in \\[0, 1\\]"),
        (DeepChestParams(init="stl", stl_accuracies="0.9,0.5,1.2,0"), "needs 4 accuracies"),
        (DeepChestParams(init="stl", stl_accuracies="a,b,c,d"), "not a comma-separated list"),
        (DeepChestParams(init="random"), "unknown init 'random'; valid: constant, stl, authors"),
        (DeepChestParams(init="authors", init_weights_file="w.json"), "init=authors takes the initial weights from"),
        (DeepChestParams(init="stl", init_weights_file="w.json"), "init=stl takes the initial weights"),
    ],
)
def test_init_stl_refusals(params, message):
    with pytest.raises(UserError, match=message):
        DeepChest(TASKS, params)


def test_the_hyperparameters_added_for_init_stl_leave_earlier_runs_identity_alone():
    from dataclasses import replace

    from mtlbench.config import RunConfig

    plain = RunConfig(method="deepchest")
    assert set(plain.hashed_fields()["method_params"]) == {
        "increase_factor", "max_weight", "decay_factor", "signal", "initial_weight", "init_weights_file",
        "init_accuracies_file",
    }  # fmt: skip
    assert replace(plain, method_params={"init": "constant"}).config_hash() == plain.config_hash()
    assert replace(plain, method_params={"init": "stl", "stl_accuracies": "0.5," * 13 + "0.5"}).config_hash() != (
        replace(plain, method_params={"init": "stl", "stl_accuracies": "0.6," * 13 + "0.6"}).config_hash()
    )


def test_a_task_without_labels_in_an_epoch_keeps_its_weight_and_is_left_out_of_the_mean():
    m = DeepChest(("a", "b", "c", "d"))
    nan = float("nan")
    acc = stats(train_acc=(0.9, nan, 0.6, 0.85))  # b: no label in the epoch; mean of the others 0.7833
    m.end_epoch(EpochStats(**{**vars(acc), "labelled": torch.tensor([5.0, 0.0, 5.0, 5.0])}))
    assert m.weights_.tolist() == pytest.approx([1 / 1.05, 1.0, 1.1, 1 / 1.05], rel=1e-12)
