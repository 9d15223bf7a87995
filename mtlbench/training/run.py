"""One run (method × dataset × seed) from claim to stored result, and how its failures are classified."""

from __future__ import annotations

import gc
import json
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mtlbench import backend, checkpoint, costs
from mtlbench.tasks import task_subset
from mtlbench.methods.stl import check_single_task
from mtlbench.results.leases import Heartbeat, Owner, this_process
from mtlbench.config import RunConfig
from mtlbench.datasets.base import DatasetBundle
from mtlbench.errors import UserError
from mtlbench.batches import steps_per_epoch
from mtlbench.results.store import ClaimLost, Force, ResultsStore, RunKey
from mtlbench.training.factories import ModelFactory, build_method, resolve_runtime
from mtlbench.training.loop import RunLoop, RunReporter, device_name
from mtlbench.training.sink import RunSink, Sinks, StoreSink
from mtlbench.training.state import start_or_resume
from mtlbench.training.tensorboard_sink import TensorBoardLog


class SilentReporter:
    """A RunReporter that shows nothing."""

    def start_run(self, label: str, epochs: int, steps: int, first_epoch: int = 0) -> None:
        """No-op."""

    def advance_step(self) -> None:
        """No-op."""

    def end_epoch(self, epoch: int, val_auroc: float) -> None:
        """No-op."""

    def end_run(self) -> None:
        """No-op."""


@dataclass
class RunResult:
    """The outcome of one cell, for the sweep summary."""

    run_id: int
    method: str
    seed: int
    status: str  # complete | diverged | oom | failed | skipped (complete earlier) | busy (another process)
    test_auroc: float = float("nan")
    test_accuracy: float = float("nan")
    wall_s: float = float("nan")
    peak_memory: str = ""
    detail: str = ""
    note: str = ""  # something the user should hear about this cell (e.g. a stored row not trusted)


def release_memory(device: torch.device) -> None:
    """Return what a finished (or failed) run held: unreachable objects, cached CUDA blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def train_run(
    config: RunConfig,
    data: DatasetBundle,
    store: ResultsStore,
    env: dict[str, Any],
    reporter: RunReporter | None = None,
    force: "Force" = False,
    owner: Owner | None = None,
    model_factory: ModelFactory | None = None,
    tensorboard: TensorBoardLog | None = None,
) -> RunResult:
    """Train and evaluate one cell, writing everything to `store`; never raises for a run's failure.

    The cell is claimed first (`ResultsStore.claim_run`): a stored result is skipped unless
    `force`, a cell another live process runs is left to it, and an unfinished earlier attempt
    resumes from its checkpoint. Out of memory, a non-finite loss or any other exception end the
    run with status oom, diverged or failed; Ctrl-C marks it interrupted and is re-raised. Only a
    results database or checkpoint that cannot be written stops the sweep (a UserError).
    `model_factory` builds the model (None: `build_model`, the harness ResNet18); tests pass a tiny one.
    With `tensorboard`, each epoch is also written to the run's TensorBoard folder (never failing the run).
    """
    reporter = reporter or SilentReporter()
    owner = owner or this_process()
    config = resolve_runtime(config)
    data = data.restricted(task_subset(config.tasks))  # all 14 but for a task-subset (single-task) run
    check_single_task(config.method, data.task_names)
    key = RunKey(config.method, config.dataset, config.seed, config.config_hash())
    device = torch.device(config.device)
    tasks = data.task_names
    method = build_method(config, tasks)  # what the run records; _train builds the one that trains
    if steps_per_epoch(len(data.train), config.batch_size) == 0:
        raise UserError(f"--batch-size {config.batch_size} is larger than the {len(data.train)} training images")
    run_config = dict(json.loads(config.to_json()), method_params=method.hyperparameters())
    fast_path = backend.configure(device, config.precision, config.deterministic)  # recorded with the environment
    claim = store.claim_run(
        key, json.dumps(run_config, sort_keys=True), {**env, **fast_path}, method.weight_scale, owner, force=force
    )
    if claim.action != "run":
        reporter.end_run()
        if claim.action == "busy":
            return RunResult(claim.run_id, config.method, config.seed, "busy", detail="running in another process")
        if claim.status == "complete":
            return RunResult(
                claim.run_id, config.method, config.seed, "skipped", detail="complete run with this config exists"
            )
        return RunResult(
            claim.run_id,
            config.method,
            config.seed,
            claim.status,
            detail="stored by an earlier sweep (--force reruns it)",
        )
    run_id = claim.run_id
    ckpt_path = checkpoint.checkpoint_path(store.path, key.config_hash)
    store.set_data_info(run_id, data.info)
    view = tensorboard.run_view(config, tasks, json.dumps(run_config, sort_keys=True)) if tensorboard else None
    try:
        with Heartbeat(store.path, run_id, owner):
            result = _train(
                config,
                data,
                store,
                run_id,
                owner,
                device,
                reporter,
                ckpt_path,
                claim.taken_over,
                claim.note,
                model_factory,
                view,
            )
        return replace(result, note=claim.note) if claim.note else result
    except ClaimLost as exc:  # another process runs it now: write nothing more
        return RunResult(run_id, config.method, config.seed, "busy", detail=str(exc))
    except (KeyboardInterrupt, SystemExit) as exc:  # SystemExit: submitit ending a job it has requeued
        kind = "KeyboardInterrupt" if isinstance(exc, KeyboardInterrupt) else "SystemExit"
        store.finish_run(run_id, "interrupted", error=f"{kind} (rerun the same command to resume)")
        raise
    except UserError as exc:  # the database or a checkpoint cannot be written: the sweep stops
        try:
            store.finish_run(run_id, "interrupted", error=str(exc))
        except UserError:
            pass  # the database itself is what failed; the claim dies with this process
        raise
    except Exception as exc:
        if not is_out_of_memory(exc):  # any other failure is recorded and the sweep goes on
            store.finish_run(run_id, "failed", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
            return RunResult(run_id, config.method, config.seed, "failed", detail=f"{type(exc).__name__}: {exc}")
        memory = _peak_memory_text(device)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        store.set_costs(
            run_id,
            dict(
                device=device_name(device),
                peak_cuda_mb=costs.peak_cuda_mb(device),
                peak_rss_mb=costs.peak_rss_mb(),
                rss_scope="run",
            ),
        )
        store.finish_run(run_id, "oom", error=f"out of memory after reaching {memory}: {message}")
        checkpoint.remove_checkpoint(ckpt_path)
        return RunResult(
            run_id,
            config.method,
            config.seed,
            "oom",
            peak_memory=memory,
            detail=f"out of memory after reaching {memory}",
        )
    finally:
        reporter.end_run()
        if view is not None:
            view.close()


OUT_OF_MEMORY_TEXTS = ("out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for PyTorch's and Python's out-of-memory errors, and for CUDA libraries' failed allocations
    (which PyTorch raises as a plain RuntimeError)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc) for t in OUT_OF_MEMORY_TEXTS)


def _peak_memory_text(device: torch.device) -> str:
    cuda_mb = costs.peak_cuda_mb(device)
    return f"{cuda_mb:.0f} MiB CUDA" if cuda_mb is not None else f"{costs.peak_rss_mb():.0f} MiB RSS"


def _train(
    config: RunConfig,
    data: DatasetBundle,
    store: ResultsStore,
    run_id: int,
    owner: Owner,
    device: torch.device,
    reporter: RunReporter,
    ckpt_path: Path,
    taken_over: bool,
    claim_note: str = "",
    model_factory: ModelFactory | None = None,
    view: RunSink | None = None,
) -> RunResult:
    """Start (or resume) the claimed run, train it, test it, store it (and show it in `view`, if any)."""
    rss_scope = costs.reset_peaks(device)
    n_steps = steps_per_epoch(len(data.train), config.batch_size)
    parts, state, note = start_or_resume(
        config, data.task_names, device, n_steps, store, run_id, ckpt_path, taken_over, model_factory
    )
    note = f" ({claim_note}){note}" if claim_note else note
    sink: RunSink = StoreSink(store, run_id, owner, data.task_names)
    if view is not None:
        sink = Sinks((sink, view))
    loop = RunLoop(config, data, parts, state, sink, reporter, ckpt_path, run_id)
    subset = f"[{config.tasks}]" if config.tasks else ""  # a single-task run names its task
    reporter.start_run(f"{config.method}{subset} seed {config.seed}{note}", config.epochs, n_steps, state.epoch)
    diverged_at = loop.run()
    if diverged_at is not None:
        checkpoint.remove_checkpoint(ckpt_path)
        return RunResult(
            run_id, config.method, config.seed, "diverged", detail=f"non-finite loss at step {diverged_at}"
        )
    test, wall_s, cuda_mb, rss_mb = loop.test_and_store(rss_scope)
    checkpoint.remove_checkpoint(ckpt_path)
    means = test.mean()
    memory = f"{cuda_mb:.0f} MiB CUDA" if cuda_mb is not None else f"{rss_mb:.0f} MiB RSS"
    return RunResult(run_id, config.method, config.seed, "complete", means["auroc"], means["accuracy"], wall_s, memory)
