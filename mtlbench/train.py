"""One run (method × dataset × seed): seeding, the training loop, evaluation, meters → store.

Nothing here branches on a method's name: the method declares what it needs and returns
weights (loss-weighting) or an aggregated shared gradient (gradient-manipulating).
"""

from __future__ import annotations

import copy
import gc
import json
import math
import statistics
import time
import traceback
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mtlbench import backend, checkpoint, grads, measure
from mtlbench.claims import Heartbeat, Owner, this_process
from mtlbench.config import RunConfig
from mtlbench.datasets.base import DatasetBundle
from mtlbench.errors import UserError
from mtlbench.feed import DeviceSplit, eval_batches, steps_per_epoch, train_batches
from mtlbench.methods.base import EpochStats, Method, StepContext
from mtlbench.metrics import THRESHOLD, TaskMetrics, task_metrics
from mtlbench.model import ModelSpec, MultiTaskResNet, per_task_losses, positive_probability
from mtlbench.registry import METHODS
from mtlbench.store import ClaimLost, ResultsStore, RunKey

DIVERGENCE_CHECK_EVERY = 20  # steps between host syncs that look for a non-finite loss


class RunReporter(Protocol):
    """Where the trainer reports progress (a rich display in the CLI, nothing in tests)."""

    def start_run(self, label: str, epochs: int, steps: int, first_epoch: int = 0) -> None: ...
    def advance_step(self) -> None: ...
    def end_epoch(self, epoch: int, val_auroc: float) -> None: ...
    def end_run(self) -> None: ...


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


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when available, else cpu; 'cuda' without a GPU is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to PyTorch; use --device cpu or auto")
    return torch.device(name)


def resolve_runtime(config: RunConfig) -> RunConfig:
    """`config` with its device-dependent choices resolved (device, grad engine, precision).

    The resolved values are what a run records and hashes: "auto" never reaches the store.
    """
    device = resolve_device(config.device)
    return replace(
        config,
        device=device.type,
        grad_engine=grads.resolve_engine(config.grad_engine, device, METHODS.get(config.method).space().small),
        precision=backend.resolve_precision(config.precision, device),
    )


def build_model(config: RunConfig, num_tasks: int, device: torch.device) -> MultiTaskResNet:
    """The harness model for `config` on `device`, in the device's fast memory layout."""
    spec = ModelSpec(num_tasks, config.head, config.pretrained, config.freeze_trunk)
    model = backend.prepare_model(MultiTaskResNet(spec), device)
    if config.compile:
        model.compile()  # compiles the module's call in place; parameters and state_dict keys unchanged
    return model


def build_method(config: RunConfig, task_names: tuple[str, ...]) -> Method:
    """The configured method with its hyperparameters and its own RNG (not the data RNG)."""
    cls = METHODS.get(config.method)
    params = cls.make_params(config.method_params)
    generator = torch.Generator().manual_seed(config.seed + 7919)
    return cls(task_names, params, generator=generator)


def warm_up(config: RunConfig, data: DatasetBundle, device: torch.device, steps: int = 10) -> None:
    """A few EW training steps of a throwaway model on the first training batch.

    The first steps of a process pay one-time costs (kernel selection, allocator growth, page
    cache); without this the first method of a sweep (EW, the cost reference) would pay them.
    Touches no seeded state that a run depends on: every run reseeds.
    """
    ew = replace(resolve_runtime(config), method="ew", method_params={}, pretrained="none")
    backend.configure(device, ew.precision, ew.deterministic)
    model = build_model(ew, len(data.task_names), device)
    method = build_method(ew, data.task_names).to(device)
    optimizer = build_optimizer(ew, model, method)
    split = DeviceSplit.from_split(data.train, device)
    batch = next(train_batches(split, min(config.batch_size, len(split)), 0, 0, device,
                               config.normalize_mean, config.normalize_std, config.augment, config.hflip))
    model.train()
    for step in range(steps):
        training_step(model, method, optimizer, *batch, ew, step, 0, device)
    batch_losses(model, *batch, ew, device)  # a gradient-free training-mode forward, as a re-evaluating method makes
    with torch.no_grad(), backend.autocast(ew.precision, device):  # the evaluation batch shape too
        model.eval()
        eval_batch = next(eval_batches(split, config.eval_batch_size, device, config.normalize_mean,
                                       config.normalize_std))
        model(eval_batch[0])
    measure.now(device)


def build_optimizer(config: RunConfig, model: torch.nn.Module, method: Method) -> torch.optim.Optimizer:
    """The sweep's optimizer over the model and the method's own groups (`Method.optimizer_groups`)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": trainable, "weight_decay": config.weight_decay}]
    groups += method.optimizer_groups()
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)


def build_schedule(config: RunConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """Per-step LR schedule: cosine decay to 0 over the run, or constant."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / max(total_steps, 1)))
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


@torch.no_grad()
def evaluate(
    model: MultiTaskResNet, split: DeviceSplit, config: RunConfig, device: torch.device
) -> tuple[TaskMetrics, np.ndarray]:
    """Metrics of `model` on a whole split and its probabilities (N, T); logits and losses stay on the
    device until the end."""
    model.eval()
    probs, loss_sum = [], torch.zeros(split.labels.shape[1], device=device, dtype=torch.float64)
    for x, y in eval_batches(split, config.eval_batch_size, device, config.normalize_mean, config.normalize_std):
        with backend.autocast(config.precision, device):
            _, logits = model(x)
        logits = backend.at_least_float32(logits)
        loss_sum += per_task_losses(logits, y, config.head).double() * y.shape[0]
        probs.append(positive_probability(logits, config.head))
    p = torch.cat(probs).cpu().numpy()
    return task_metrics(split.labels.numpy(), p, (loss_sum / len(split)).cpu().numpy()), p


@dataclass
class EpochMeter:
    """On-device running sums of one training epoch (no host sync per step)."""

    num_tasks: int
    device: torch.device
    loss_sum: torch.Tensor = field(init=False)
    correct: torch.Tensor = field(init=False)
    weight_sum: torch.Tensor = field(init=False)
    step_weights: list[torch.Tensor] = field(default_factory=list)
    seen: int = 0
    steps: int = 0
    weighted_steps: int = 0  # steps whose method returned task weights

    def __post_init__(self) -> None:
        z = lambda: torch.zeros(self.num_tasks, device=self.device, dtype=torch.float64)  # noqa: E731
        self.loss_sum, self.correct, self.weight_sum = z(), z(), z()

    def add(self, losses: torch.Tensor, probs: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None,
            keep_step: bool) -> None:
        """Accumulate one step's per-task losses, correct predictions and weights (if the method gave any)."""
        b = y.shape[0]
        self.loss_sum += losses.detach().double() * b
        self.correct += ((probs > THRESHOLD) == (y > 0.5)).sum(0).double()
        if weights is not None:
            w = weights.detach().double()
            self.weight_sum += w
            self.weighted_steps += 1
            if keep_step:
                self.step_weights.append(w)
        self.seen += b
        self.steps += 1


@dataclass
class StepRecord:
    """What one training step produced, detached: per-task losses, float32 logits, the weights used
    (None for a method without task weights)."""

    losses: torch.Tensor
    logits: torch.Tensor
    weights: torch.Tensor | None


def training_step(
    model: MultiTaskResNet,
    method: Method,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    config: RunConfig,
    step: int,
    epoch: int,
    device: torch.device,
    timer: measure.StepTimer | None = None,
) -> StepRecord:
    """One optimizer step: forward, per-task losses, the method's decision, backward, update, and the
    method's re-evaluation of the batch if it asks for one.

    The method's gradient space computes the per-task gradients it declared and applies its
    decision (mtlbench/spaces.py). `timer` (optional) marks what only the method adds (per-task
    gradients, its own computation, its re-evaluation); the forward/backward every method pays
    is outside it. The previous step's gradients are freed before the forward and the per-task
    Jacobian before the update, so a gradient method never holds both.
    """
    optimizer.zero_grad(set_to_none=True)
    with backend.autocast(config.precision, device):
        features, logits = model(x)
    logits = backend.at_least_float32(logits)  # losses, metrics and methods never see bf16
    losses = per_task_losses(logits, y, config.head)

    space = method.space()
    if timer is not None:
        timer.method_start()
    task_grads = space.per_task_gradients(losses, model, features, config.grad_engine)
    at = tuple(t.detach() for t in space.tensors(model, features)) if space.per_task else None
    ctx = StepContext(losses=losses, step=step, epoch=epoch, grads=task_grads, space_tensors=at)
    out = method.step(ctx)
    ctx, task_grads = replace(ctx, grads=None), None  # the (T, P) Jacobian: the method has what it needs from it
    if timer is not None:
        timer.method_end()

    space.backward(out, losses, model, features)
    optimizer.step()
    if method.reevaluates:
        if timer is not None:
            timer.method_start()
        method.after_update(ctx, lambda: batch_losses(model, x, y, config, device))
        if timer is not None:
            timer.method_end()
    return StepRecord(losses.detach(), logits.detach(), None if out.weights is None else out.weights.detach())


@torch.no_grad()
def batch_losses(model: MultiTaskResNet, x: torch.Tensor, y: torch.Tensor, config: RunConfig,
                 device: torch.device) -> torch.Tensor:
    """The per-task losses (T,) of a batch at the model's current parameters, without a graph.

    The model stays in its mode: in training mode, as FAMO's authors re-evaluate (their CelebA
    trainer), BatchNorm normalizes with the batch's statistics and updates its running ones.
    """
    with backend.autocast(config.precision, device):
        _, logits = model(x)
    return per_task_losses(backend.at_least_float32(logits), y, config.head)


def _first_bad_step(bad: torch.Tensor) -> int | None:
    v = int(bad.item())
    return v if v >= 0 else None


@dataclass
class LoopState:
    """What the training loop carries from one epoch to the next (saved in each checkpoint).

    `wall_s` and the peaks are those of earlier attempts, up to their last checkpoint: a resumed
    run's cost is the cost of the work that produced it, not of the work a kill threw away.
    """

    epoch: int = 0  # the next epoch to train
    global_step: int = 0
    step_times: list[float] = field(default_factory=list)
    method_times: list[float] = field(default_factory=list)
    train_s: float = 0.0
    eval_s: float = 0.0
    wall_s: float = 0.0
    peak_cuda_mb: float | None = None
    peak_rss_mb: float | None = None
    best_score: float = -math.inf  # validation mean AUROC (or −loss) of the selected epoch
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    best_val_probs: torch.Tensor | None = None


@dataclass
class RunParts:
    """The live objects of one run that a checkpoint saves and restores."""

    model: MultiTaskResNet
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    method: Method
    device: torch.device


def _checkpoint_payload(parts: RunParts, loop: LoopState, run_id: int, config_hash: str) -> dict[str, Any]:
    state = {f.name: getattr(loop, f.name) for f in fields(LoopState)}
    if loop.best_epoch == loop.epoch - 1:  # the selected model is the current one: not saved twice
        state["best_state"] = None
    return {
        "run_id": run_id,
        "config_hash": config_hash,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "schedule": parts.schedule.state_dict(),
        "method": parts.method.state_dict(),
        "rng": checkpoint.rng_states(parts.device),
        "loop": state,
    }


def _restore(parts: RunParts, payload: dict[str, Any]) -> LoopState:
    parts.model.load_state_dict(payload["model"])
    parts.optimizer.load_state_dict(payload["optimizer"])
    parts.schedule.load_state_dict(payload["schedule"])
    parts.method.load_state_dict(payload["method"])
    parts.method.to(parts.device)
    checkpoint.restore_rng_states(payload["rng"], parts.device)
    loop = LoopState(**payload["loop"])
    if loop.best_state is None and loop.best_epoch >= 0:
        loop.best_state = copy.deepcopy(parts.model.state_dict())
    return loop


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
    force: bool = False,
    owner: Owner | None = None,
) -> RunResult:
    """Train and evaluate one cell, writing everything to `store`; never raises for a run's failure.

    The cell is claimed first (`ResultsStore.claim_run`): a stored result is skipped unless
    `force`, a cell another live process runs is left to it, and an unfinished earlier attempt
    resumes from its checkpoint. Out of memory, a non-finite loss or any other exception end the
    run with status oom, diverged or failed; Ctrl-C marks it interrupted and is re-raised. Only a
    results database or checkpoint that cannot be written stops the sweep (a UserError).
    """
    reporter = reporter or SilentReporter()
    owner = owner or this_process()
    config = resolve_runtime(config)
    key = RunKey(config.method, config.dataset, config.seed, config.config_hash())
    device = torch.device(config.device)
    tasks = data.task_names
    method = build_method(config, tasks)  # what the run records; _train builds the one that trains
    if steps_per_epoch(len(data.train), config.batch_size) == 0:
        raise UserError(f"--batch-size {config.batch_size} is larger than the {len(data.train)} training images")
    run_config = dict(json.loads(config.to_json()), method_params=method.hyperparameters())
    fast_path = backend.configure(device, config.precision, config.deterministic)  # recorded with the environment
    claim = store.claim_run(key, json.dumps(run_config, sort_keys=True), {**env, **fast_path},
                            method.normalization, owner, force=force)
    if claim.action != "run":
        reporter.end_run()
        if claim.action == "busy":
            return RunResult(claim.run_id, config.method, config.seed, "busy", detail="running in another process")
        if claim.status == "complete":
            return RunResult(claim.run_id, config.method, config.seed, "skipped",
                             detail="complete run with this config exists")
        return RunResult(claim.run_id, config.method, config.seed, claim.status,
                         detail="stored by an earlier sweep (--force reruns it)")
    run_id = claim.run_id
    ckpt_path = checkpoint.checkpoint_path(store.path, key.config_hash)
    store.set_data_info(run_id, data.info)
    try:
        with Heartbeat(store.path, run_id, owner):
            result = _train(config, data, store, run_id, owner, device, reporter, ckpt_path, claim.taken_over,
                            claim.note)
        return replace(result, note=claim.note) if claim.note else result
    except ClaimLost as exc:  # another process runs it now: write nothing more
        return RunResult(run_id, config.method, config.seed, "busy", detail=str(exc))
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted", error="KeyboardInterrupt (rerun the same command to resume)")
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
        store.set_costs(run_id, dict(device=_device_name(device), peak_cuda_mb=measure.peak_cuda_mb(device),
                                     peak_rss_mb=measure.peak_rss_mb(), rss_scope="run"))
        store.finish_run(run_id, "oom", error=f"out of memory after reaching {memory}: {message}")
        checkpoint.remove_checkpoint(ckpt_path)
        return RunResult(run_id, config.method, config.seed, "oom", peak_memory=memory,
                         detail=f"out of memory after reaching {memory}")
    finally:
        reporter.end_run()


OUT_OF_MEMORY_TEXTS = ("out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for PyTorch's and Python's out-of-memory errors, and for CUDA libraries' failed allocations
    (which PyTorch raises as a plain RuntimeError)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc) for t in OUT_OF_MEMORY_TEXTS)


def _device_name(device: torch.device) -> str:
    return str(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu"


def _peak_memory_text(device: torch.device) -> str:
    cuda_mb = measure.peak_cuda_mb(device)
    return f"{cuda_mb:.0f} MiB CUDA" if cuda_mb is not None else f"{measure.peak_rss_mb():.0f} MiB RSS"


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _fresh_parts(config: RunConfig, tasks: tuple[str, ...], device: torch.device, n_steps: int) -> RunParts:
    """Model, optimizer, schedule and method as every run of this seed starts them."""
    torch.manual_seed(config.seed)  # identical initial weights for every method of a seed
    model = build_model(config, len(tasks), device)
    method = build_method(config, tasks).to(device)  # its randomness is its own generator's
    optimizer = build_optimizer(config, model, method)
    schedule = build_schedule(config, optimizer, n_steps * config.epochs)
    return RunParts(model, optimizer, schedule, method, device)


def _start_or_resume(
    config: RunConfig, tasks: tuple[str, ...], device: torch.device, n_steps: int,
    store: ResultsStore, run_id: int, ckpt_path: Path, taken_over: bool,
) -> tuple[RunParts, LoopState, str]:
    """Fresh parts, or, for a taken-over run with a usable checkpoint, the parts and loop state it saved.

    A checkpoint that does not load, or no longer fits this code (a method's state changed), is
    not trusted: the run restarts from epoch 0 and says why.
    """
    parts = _fresh_parts(config, tasks, device, n_steps)
    if not taken_over:
        checkpoint.remove_checkpoint(ckpt_path)  # a stale file from an earlier database is never trusted
        return parts, LoopState(), ""
    payload, why = checkpoint.load_checkpoint(ckpt_path, run_id, config.config_hash(), device)
    if payload is not None:
        try:
            loop = _restore(parts, payload)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            why = f"checkpoint {ckpt_path.name} does not fit this version ({type(exc).__name__}); restarting the run"
            parts = _fresh_parts(config, tasks, device, n_steps)  # the partial restore is thrown away
        else:
            store.rewind_run(run_id, loop.epoch)
            return parts, loop, f" (resumed at epoch {loop.epoch + 1})"
        finally:
            del payload
    checkpoint.remove_checkpoint(ckpt_path)
    store.restart_run(run_id)
    return parts, LoopState(), "" if why == "no checkpoint" else f" ({why})"


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
) -> RunResult:
    tasks = data.task_names
    t_start = time.perf_counter()
    rss_scope = measure.reset_peaks(device)

    train_split = DeviceSplit.from_split(data.train, device)
    val_split = DeviceSplit.from_split(data.val, device)
    test_split = DeviceSplit.from_split(data.test, device)
    n_steps = steps_per_epoch(len(train_split), config.batch_size)
    parts, loop, note = _start_or_resume(config, tasks, device, n_steps, store, run_id, ckpt_path, taken_over)
    model, optimizer, schedule, method = parts.model, parts.optimizer, parts.schedule, parts.method
    note = f" ({claim_note}){note}" if claim_note else note
    reporter.start_run(f"{config.method} seed {config.seed}{note}", config.epochs, n_steps, loop.epoch)

    per_step_weights = method.weights_changed_per_step()
    timer = measure.StepTimer(device)
    bad_step = torch.full((), -1, dtype=torch.long, device=device)

    for epoch in range(loop.epoch, config.epochs):
        model.train()
        meter = EpochMeter(len(tasks), device)
        t_epoch = measure.now(device)
        for x, y in train_batches(
            train_split, config.batch_size, config.seed, epoch, device,
            config.normalize_mean, config.normalize_std, config.augment, config.hflip,
        ):
            timer.start()
            rec = training_step(model, method, optimizer, x, y, config, loop.global_step, epoch, device, timer)
            schedule.step()
            bad = ~torch.isfinite(rec.losses).all()
            bad_step = torch.where(bad & (bad_step < 0), torch.full_like(bad_step, loop.global_step), bad_step)
            meter.add(rec.losses, positive_probability(rec.logits, config.head), y, rec.weights, per_step_weights)
            timer.end()
            loop.global_step += 1
            reporter.advance_step()
            if loop.global_step % DIVERGENCE_CHECK_EVERY == 0 and _first_bad_step(bad_step) is not None:
                break
        loop.train_s += measure.now(device) - t_epoch
        epoch_steps, epoch_methods = timer.collect()
        loop.step_times += epoch_steps
        loop.method_times += epoch_methods

        diverged_at = _first_bad_step(bad_step)
        if diverged_at is not None:
            with store.transaction(immediate=True):
                store.assert_owner(run_id, owner)
                store.set_diagnostics(run_id, method.diagnostics())
                store.finish_run(run_id, "diverged", diverged_step=diverged_at, error="non-finite loss")
            checkpoint.remove_checkpoint(ckpt_path)
            return RunResult(run_id, config.method, config.seed, "diverged", detail=f"non-finite loss at step {diverged_at}")

        train_loss = (meter.loss_sum / meter.seen).cpu().numpy()
        train_acc = (meter.correct / meter.seen).cpu().numpy()
        t_eval = measure.now(device)
        val, val_probs = evaluate(model, val_split, config, device)
        loop.eval_s += measure.now(device) - t_eval
        with store.transaction(immediate=True):  # an epoch's rows land together, while the run is still ours
            store.assert_owner(run_id, owner)
            store.add_train_stats(run_id, epoch, tasks, train_loss, train_acc)
            if meter.weighted_steps:  # an aggregator without task weights logs none
                store.add_weights(run_id, epoch, [-1], tasks,
                                  (meter.weight_sum / meter.weighted_steps).cpu().numpy()[None])
            if per_step_weights and meter.step_weights:
                first = loop.global_step - meter.steps
                store.add_weights(run_id, epoch, list(range(first, loop.global_step)), tasks,
                                  torch.stack(meter.step_weights).cpu().numpy())
            store.add_metrics(run_id, "val", epoch, tasks, val)
        val_auroc = val.mean()["auroc"]
        reporter.end_epoch(epoch, val_auroc)
        score = val_auroc if np.isfinite(val_auroc) else -val.mean()["loss"]
        if config.select == "last" or score > loop.best_score or loop.best_state is None:
            loop.best_score, loop.best_epoch = float(score), epoch
            loop.best_state = copy.deepcopy(model.state_dict())
            loop.best_val_probs = torch.from_numpy(val_probs)

        method.end_epoch(EpochStats(
            epoch=epoch,
            train_loss=torch.from_numpy(train_loss),
            train_accuracy=torch.from_numpy(train_acc),
            val_loss=torch.from_numpy(val.loss),
            val_accuracy=torch.from_numpy(val.accuracy),
            val_auroc=torch.from_numpy(val.auroc),
        ))
        loop.epoch = epoch + 1
        if loop.epoch < config.epochs:  # after the last epoch only the test remains: no checkpoint
            checkpoint.save_checkpoint(ckpt_path, _checkpoint_payload(
                parts, replace(loop, wall_s=loop.wall_s + time.perf_counter() - t_start,
                               peak_cuda_mb=_max(loop.peak_cuda_mb, measure.peak_cuda_mb(device)),
                               peak_rss_mb=_max(loop.peak_rss_mb, measure.peak_rss_mb())),
                run_id, config.config_hash()))

    # test once, with the model selected on validation
    model.load_state_dict(loop.best_state)
    t_eval = measure.now(device)
    test, test_probs = evaluate(model, test_split, config, device)
    loop.eval_s += measure.now(device) - t_eval

    wall_s = loop.wall_s + time.perf_counter() - t_start
    warm = loop.step_times[min(len(loop.step_times) - 1, 5):] if loop.step_times else [float("nan")]
    warm_m = loop.method_times[min(len(loop.method_times) - 1, 5):] if loop.method_times else [float("nan")]
    cuda_mb = _max(loop.peak_cuda_mb, measure.peak_cuda_mb(device))
    rss_mb = _max(loop.peak_rss_mb, measure.peak_rss_mb())
    with store.transaction(immediate=True):  # the result lands whole or not at all
        store.assert_owner(run_id, owner)
        store.add_metrics(run_id, "test", loop.best_epoch, tasks, test)
        store.add_predictions(run_id, "val", loop.best_epoch, data.val.image_ids, data.val.labels,
                              loop.best_val_probs.numpy())
        store.add_predictions(run_id, "test", loop.best_epoch, data.test.image_ids, data.test.labels, test_probs)
        store.set_costs(run_id, dict(
            device=_device_name(device),
            wall_s=wall_s, train_s=loop.train_s, eval_s=loop.eval_s,
            median_step_s=statistics.median(warm), median_method_s=statistics.median(warm_m),
            images_per_s=loop.global_step * config.batch_size / loop.train_s if loop.train_s > 0 else None,
            peak_cuda_mb=cuda_mb, peak_rss_mb=rss_mb, rss_scope=rss_scope,
        ))
        store.set_diagnostics(run_id, method.diagnostics())
        store.finish_run(run_id, "complete", selected_epoch=loop.best_epoch)
    checkpoint.remove_checkpoint(ckpt_path)
    means = test.mean()
    memory = f"{cuda_mb:.0f} MiB CUDA" if cuda_mb is not None else f"{rss_mb:.0f} MiB RSS"
    return RunResult(run_id, config.method, config.seed, "complete", means["auroc"], means["accuracy"], wall_s, memory)

