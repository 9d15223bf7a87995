"""Fault class: a run killed mid-epoch resumes from its last checkpoint and ends where an
uninterrupted run ends (exactly, on the CPU), for every method that carries state."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import mtlbench.training.loop as train_mod
from mtlbench import checkpoint
from mtlbench.results.store import ResultsStore
from mtlbench.training import build_model, train_run
from tests.patching import argument_reader
from tests.tiny_model import tiny_model
from tests.configs import cpu_smoke_config

CFG = cpu_smoke_config(epochs=3, batch_size=16)
METRICS = "SELECT split, epoch, task, loss, accuracy, auroc, ap FROM metrics ORDER BY split, epoch, task"
WEIGHTS = "SELECT epoch, step, task, weight FROM weights ORDER BY epoch, step, task"


class Killed(BaseException):
    """Stands in for SIGKILL: no handler of the trainer sees it, the run row stays 'running'."""


def _rows(store: ResultsStore, sql: str) -> list[tuple]:
    return [tuple(r) for r in store.query(sql)]


def _kill_at(monkeypatch, global_step: int) -> None:
    real = train_mod.training_step
    step_of = argument_reader(real, "step")

    def step(*args, **kwargs):
        if step_of(*args, **kwargs) == global_step:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "training_step", step)


# the tiny model for every method with state; the harness ResNet18 (BatchNorm, channels-last) for two,
# in the slow suite
CASES = [
    pytest.param(m, tiny_model, id=f"{m}-tiny")
    for m in ("ew", "deepchest", "dwa", "uncertainty", "famo", "gradnorm", "rlw", "graddrop")
] + [pytest.param(m, build_model, id=f"{m}-resnet18", marks=pytest.mark.slow) for m in ("deepchest", "gradnorm")]


@pytest.mark.parametrize("method, model_factory", CASES)
def test_killed_run_resumes_and_equals_an_uninterrupted_run(
    method, model_factory, toy_bundle, tmp_path, monkeypatch
) -> None:
    cfg = replace(CFG, method=method)
    steps = len(toy_bundle.train) // cfg.batch_size  # per epoch
    with ResultsStore(tmp_path / "straight.sqlite") as store:
        straight = train_run(cfg, toy_bundle, store, {}, model_factory=model_factory)
        assert straight.status == "complete", straight.detail
        expected = _rows(store, METRICS), _rows(store, WEIGHTS)

    path = tmp_path / "killed.sqlite"
    ckpt = checkpoint.checkpoint_path(path, cfg.config_hash())
    with ResultsStore(path) as store, monkeypatch.context() as patch:
        _kill_at(patch, 2 * steps + 1)  # the second step of the third epoch
        with pytest.raises(Killed):
            train_run(cfg, toy_bundle, store, {}, model_factory=model_factory)
        assert store.query("SELECT status FROM runs")[0]["status"] == "running"
        assert ckpt.exists()  # written at the end of the second epoch
        assert torch.load(ckpt, weights_only=True)["loop"]["epoch"] == 2
    with ResultsStore(path) as store:
        resumed = train_run(cfg, toy_bundle, store, {}, model_factory=model_factory)
        assert resumed.status == "complete", resumed.detail
        run = store.query("SELECT run_id, resumes FROM runs")[0]
        assert (run["run_id"], run["resumes"]) == (resumed.run_id, 1)
        assert (_rows(store, METRICS), _rows(store, WEIGHTS)) == expected  # exact
        assert resumed.test_auroc == straight.test_auroc
    assert not ckpt.exists()  # a finished run leaves no checkpoint behind
