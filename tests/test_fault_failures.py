"""Fault class: a run fails (out of memory, non-finite loss, any exception) and the sweep goes on.

Each fault is injected into one method of a real `mtlbench run` sweep: the run is stored with
its status and what is known about it, the next run starts cleanly (the failed run's model is
freed), the CLI lists the failures and exits 1.
"""

from __future__ import annotations

import gc
import re
import weakref
from dataclasses import replace

import pytest
import torch

import mtlbench.training as training
import mtlbench.training.loop as loop_mod
import mtlbench.training.state as state_mod
import mtlbench.training.step as step_mod
from mtlbench.cli import main
from mtlbench.results.store import ResultsStore
from tests.sweeps import smoke_sweep

FAULTS = {  # method → the fault injected at its 3rd training step
    "deepchest": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "rlw": lambda: RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"),
    "dwa": "nan",
}
SWEEP = smoke_sweep("ew,deepchest,dwa,rlw,famo")


@pytest.fixture
def faulty(monkeypatch):
    """Inject FAULTS; record a weak reference to every model built, and which were alive at each build."""
    real_step, real_build = loop_mod.training_step, state_mod.build_model
    models: list[weakref.ref] = []
    alive_at_build: list[int] = []

    def step(model, method, optimizer, x, y, config, step, *args, **kwargs):
        fault = FAULTS.get(config.method)
        if fault is not None and step == 2:
            if fault == "nan":
                rec = real_step(model, method, optimizer, x, y, config, step, *args, **kwargs)
                return replace(rec, losses=rec.losses * float("nan"))
            raise fault()
        return real_step(model, method, optimizer, x, y, config, step, *args, **kwargs)

    def build(*args, **kwargs):
        gc.collect()
        alive_at_build.append(sum(ref() is not None for ref in models))
        model = real_build(*args, **kwargs)
        models.append(weakref.ref(model))
        return model

    monkeypatch.setattr(loop_mod, "training_step", step)
    monkeypatch.setattr(state_mod, "build_model", build)  # every run's model
    monkeypatch.setattr(step_mod, "build_model", build)  # the warm-up's
    return alive_at_build


@pytest.mark.slow  # a real sweep, several processes or a kill: `python -m pytest -m slow`
def test_each_failure_is_stored_with_its_status_and_the_sweep_goes_on(faulty, tmp_path, capsys) -> None:
    results = tmp_path / "r.sqlite"
    code = main(SWEEP + ["--results", str(results), "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert code == 1, out
    with ResultsStore(results) as store:
        runs = {r["method"]: r for r in store.query("SELECT * FROM runs")}
        costs = {r["run_id"]: r for r in store.query("SELECT * FROM costs")}
    assert {m: r["status"] for m, r in runs.items()} == {
        "ew": "complete",
        "deepchest": "oom",
        "dwa": "diverged",
        "rlw": "failed",
        "famo": "complete",
    }
    oom = runs["deepchest"]
    reached = re.fullmatch(
        r"out of memory after reaching (\d+) MiB RSS: CUDA out of memory\. Tried to allocate "
        r"2\.00 GiB",
        oom["error"],
    )
    assert reached, oom["error"]
    peak = costs[oom["run_id"]]
    assert peak["peak_cuda_mb"] is None and peak["rss_scope"] == "run" and peak["device"] == "cpu"
    assert abs(peak["peak_rss_mb"] - int(reached[1])) <= 1  # the memory named is the stored figure (read twice)
    assert runs["dwa"]["diverged_step"] == 2
    assert runs["rlw"]["error"].startswith("RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")
    # the CLI's summary names each failure
    assert "deepchest seed 0: oom — out of memory after reaching" in out
    assert "dwa seed 0: diverged — non-finite loss at step 2" in out
    assert "rlw seed 0: failed — RuntimeError: cuDNN error" in out
    # the warm-up's and every earlier run's model are gone when the next run builds its own
    assert faulty == [0] * 6, faulty


@pytest.mark.slow  # a real sweep, several processes or a kill: `python -m pytest -m slow`
def test_a_rerun_keeps_oom_and_diverged_results_and_retries_failed_ones(faulty, tmp_path, capsys) -> None:
    args = SWEEP + ["--results", str(tmp_path / "r.sqlite"), "--data-dir", str(tmp_path / "data")]
    assert main(args) == 1
    capsys.readouterr()
    FAULTS_BEFORE = dict(FAULTS)
    try:
        FAULTS.pop("rlw")  # the failure was transient
        assert main(args) == 1  # oom and diverged are results: still listed, still exit 1
    finally:
        FAULTS.clear()
        FAULTS.update(FAULTS_BEFORE)
    out = capsys.readouterr().out
    assert "deepchest seed 0: oom — stored by an earlier sweep (--force reruns it)" in out
    assert "2 run(s) were already complete" in out
    with ResultsStore(tmp_path / "r.sqlite") as store:
        assert {r["method"]: r["status"] for r in store.query("SELECT method, status FROM runs")}["rlw"] == "complete"


@pytest.mark.parametrize(
    "exc, oom",
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"), True),
        (MemoryError(), True),
        (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
        (RuntimeError("CUDA error: out of memory"), True),
        (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_what_counts_as_out_of_memory(exc, oom) -> None:
    assert training.is_out_of_memory(exc) is oom
