"""static: torchxrayvision's inverse-prevalence task weights by hand, weights from a file, the refusals, one tiny run."""

import json

import numpy as np
import pytest
import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.params import StaticParams
from mtlbench.methods.static import StaticWeighting, inverse_prevalence_weights

TASKS = ("a", "b", "c")


def _weights(method: StaticWeighting) -> list[float]:
    return method.step(StepContext(torch.ones(len(TASKS), dtype=torch.float64), 0, 0)).weights.tolist()


def test_inverse_prevalence_is_torchxrayvisions_formula():
    # positives 1, 4, 7: raw = max − P + mean = 7 − P + 4 = 10, 7, 4; divided by the largest, 10
    labels = torch.zeros(10, 3, dtype=torch.uint8)
    labels[:1, 0], labels[:4, 1], labels[:7, 2] = 1, 1, 1
    assert inverse_prevalence_weights(labels).tolist() == pytest.approx([1.0, 0.7, 0.4])
    method = StaticWeighting(TASKS)
    method.bind_training_labels(labels)
    assert _weights(method) == pytest.approx([1.0, 0.7, 0.4])
    method.bind_training_labels(labels)  # a resumed run binds again: the same labels, the same weights
    assert _weights(method) == pytest.approx([1.0, 0.7, 0.4])


def test_equal_prevalence_gives_equal_weights():
    labels = torch.tensor([[1, 1, 1], [0, 0, 0]], dtype=torch.uint8)
    assert inverse_prevalence_weights(labels).tolist() == [1.0, 1.0, 1.0]


def test_a_step_before_the_labels_are_bound_is_refused():
    with pytest.raises(RuntimeError, match="bind_training_labels was not called"):
        _weights(StaticWeighting(TASKS))


def test_weights_from_a_file_by_task_name(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"a": 2.0, "b": 0.5, "c": 0}))
    method = StaticWeighting(TASKS, StaticParams(source="file", weights_file=str(path)))
    method.bind_training_labels(torch.ones(4, 3, dtype=torch.uint8))  # ignored: the file decides
    assert _weights(method) == [2.0, 0.5, 0.0]


@pytest.mark.parametrize(
    "params, message",
    [
        (StaticParams(source="median"), "unknown source 'median'; valid: inverse-prevalence, file"),
        (StaticParams(source="file"), "source=file needs --param static.weights_file=PATH"),
        (StaticParams(weights_file="w.json"), "weights_file 'w.json' is read only with --param static.source=file"),
        (StaticParams(source="file", weights_file="/nonexistent.json"), "static weights file not found"),
    ],
)
def test_bad_params(params, message):
    with pytest.raises(UserError, match=message):
        StaticWeighting(TASKS, params)


def test_negative_or_all_zero_file_weights_are_refused(tmp_path):
    for values in ([1.0, -1.0, 1.0], [0, 0, 0]):
        path = tmp_path / "w.json"
        path.write_text(json.dumps(values))
        with pytest.raises(UserError, match="weights must be ≥ 0 and not all 0"):
            StaticWeighting(TASKS, StaticParams(source="file", weights_file=str(path)))


def test_tiny_training_run_logs_the_training_splits_weights(tiny_run, toy_bundle):
    run = tiny_run("static", epochs=2)
    run.assert_complete()
    expected = inverse_prevalence_weights(torch.from_numpy(toy_bundle.train.labels)).tolist()
    for e in (0, 1):
        logged = {r["task"]: r["weight"] for r in run.weights if r["epoch"] == e}
        assert [logged[t] for t in toy_bundle.task_names] == pytest.approx(expected, rel=1e-6)
    assert np.isclose(max(expected), 1.0)


def test_missing_labels_count_as_neither_positive_nor_negative():
    nan = float("nan")
    labels = torch.tensor([[1, nan, 0], [1, 1, nan], [nan, 1, 0], [0, nan, nan]], dtype=torch.float32)
    positives = [2.0, 2.0, 0.0]  # np.nansum, as torchxrayvision
    raw = [max(positives) - p + sum(positives) / 3 for p in positives]
    assert inverse_prevalence_weights(labels).tolist() == pytest.approx([r / max(raw) for r in raw], rel=1e-12)
