"""No host sync per step: loss-weighting methods and the training loop keep per-step work on the device.

A host sync is any call that needs a tensor's value on the host (`.item()`, `bool(t)`, `.tolist()`,
`.numpy()`, `.cpu()`, …). On a CPU these are cheap, but on a GPU each one stalls the queue; they
are counted here with a TorchFunctionMode, which sees every such call whatever the device.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
import torch

from mtlbench.config import build_config
from mtlbench.conformance import SyncCounter
from mtlbench.methods.base import EpochStats, StepContext
from mtlbench.registry import METHODS
from mtlbench.results.store import ResultsStore
from mtlbench.tasks import TASK_NAMES
from mtlbench.training import DIVERGENCE_CHECK_EVERY, build_method, train_run
from tests.conftest import make_bundle
from tests.tiny_model import tiny_model

LOSS_METHODS = [name for name in METHODS.names() if not METHODS.get(name).space().per_task]


def test_the_counter_sees_each_kind_of_sync() -> None:
    t = torch.ones(3)
    with SyncCounter() as counter:
        t.sum().item(), bool(t.sum() > 0), t.tolist(), t.numpy(), t.cpu(), float(t.sum())
        t.nonzero(), t[t > 0], t[torch.tensor([0, 2])]  # the last one does not sync: an index list
    assert set(counter.calls) == {
        "item",
        "__bool__",
        "tolist",
        "numpy",
        "cpu",
        "__float__",
        "nonzero",
        "boolean indexing",
    }


@pytest.mark.parametrize("name", LOSS_METHODS)
def test_loss_weighting_step_makes_no_host_sync(name: str) -> None:
    method = build_method(replace(build_config("smoke"), method=name), TASK_NAMES)
    method.bind_training_labels(torch.eye(len(TASK_NAMES), dtype=torch.uint8))  # as the loop does, before step 0
    optimizer = torch.optim.SGD(list(method.parameters()) or [torch.zeros(1, requires_grad=True)], lr=0.01)
    gen = torch.Generator().manual_seed(0)
    ones = torch.ones(len(TASK_NAMES))
    for epoch in range(3):
        with SyncCounter() as counter:
            for step in range(4):
                losses = (torch.rand(len(TASK_NAMES), generator=gen) + 0.1).requires_grad_()
                out = method.step(StepContext(losses=losses, step=4 * epoch + step, epoch=epoch))
                objective = out.objective if out.objective is not None else (out.weights.detach() * losses).sum()
                optimizer.zero_grad()
                objective.backward()
                optimizer.step()
        assert not counter.calls, f"{name} synced in step(): {dict(counter.calls)}"
        # epoch statistics arrive once per epoch; reading them there is allowed
        method.end_epoch(EpochStats(epoch, 0.5 * ones, 0.8 * ones, 0.6 * ones, 0.7 * ones, 0.75 * ones))


def _syncs_of_run(method: str, n_train: int, tmp_path) -> Counter:
    config = replace(build_config("smoke"), device="cpu", epochs=1, batch_size=16, method=method)
    with ResultsStore(tmp_path / f"{method}-{n_train}.sqlite") as store, SyncCounter() as counter:
        out = train_run(config, make_bundle(n_train), store, {}, model_factory=tiny_model)
    assert out.status == "complete", out.detail
    return counter.calls


@pytest.mark.parametrize("method", ["ew", "deepchest", "uncertainty", "famo"])
def test_training_loop_syncs_once_per_logging_interval_not_per_step(method: str, tmp_path) -> None:
    """Host syncs of a run do not grow with its number of steps (below the divergence-check interval)."""
    few, many = 3, 3 + DIVERGENCE_CHECK_EVERY - 4  # both below one check interval
    short = _syncs_of_run(method, 16 * few, tmp_path)
    long = _syncs_of_run(method, 16 * many, tmp_path)
    assert long == short, f"{method}: {many - few} more steps added syncs {dict(long - short)}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CPU coverage: the tests above)")
@pytest.mark.parametrize("method", ["ew", "deepchest", "uncertainty", "famo", "rlw", "dwa"])
def test_cuda_training_steps_never_synchronize(method: str) -> None:
    """On a GPU, torch's sync debug mode turns any synchronizing call inside the steps into an error."""
    from mtlbench.batches import DeviceSplit, train_batches
    from mtlbench.costs import StepTimer
    from mtlbench.training import build_model, build_optimizer, resolve_runtime, training_step

    device = torch.device("cuda")
    config = resolve_runtime(replace(build_config("smoke"), device="cuda", method=method, batch_size=16))
    bundle = make_bundle(96)
    model = build_model(config, len(TASK_NAMES), device).train()
    weighting = build_method(config, TASK_NAMES).to(device)
    optimizer = build_optimizer(config, model, weighting)
    timer = StepTimer(device)
    split = DeviceSplit.from_split(bundle.train, device)
    first = next(train_batches(split, 16, 0, 0, device, 0.5, 0.5, "light"))
    training_step(model, weighting, optimizer, *first, config, 0, 0, device)  # first-step allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:  # the loader (gather, copy, light augmentation) is inside the checked region too
        for step, (x, y) in enumerate(train_batches(split, 16, 0, 1, device, 0.5, 0.5, "light"), start=1):
            timer.start()
            training_step(model, weighting, optimizer, x, y, config, step, 0, device, timer)
            timer.end()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(timer.collect()[0]) == len(bundle.train) // 16
