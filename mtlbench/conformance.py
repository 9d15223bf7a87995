"""One conformance check for any weighting method: what the trainer relies on, tried in seconds.

`check_method(cls)` runs a method class through the real training step (mtlbench.training) on a
tiny injected model and checks the contract of methods/base.py, the way scikit-learn's
`check_estimator` checks an estimator. The test suite runs it over every registered method
(built-in and installed plugins); the author of a plugin can call it from their own tests.
Each failed check raises ConformanceError naming the method and the rule.

Checked: the defaults construct; the hyperparameters serialize to JSON and hash stably
(explicit defaults are the same cell as none); a wrong type, a non-finite number and a
nonsense text value are refused as one-line UserErrors; every step returns something to train
with, and weights (when given) have shape (T,), are finite, on the losses' device and dtype, and
sum to T when the method declares "sum-to-T"; a shared gradient has the space's size; every
tensor of the method's state is a registered buffer or parameter; the global RNG is untouched;
the method is deterministic given its generator; `state_dict` survives `torch.save` /
`torch.load(weights_only=True)` and the steps after a restore equal the uninterrupted ones; a
method that declares `syncs_host = False` reads no tensor value on the host. Missing labels: the same
run on batches with NaN labels (some images lack some tasks; one task has no label at all in the first
epoch's batches and in one later batch) through a masked TaskLoss, with NaN epoch statistics for a task
without labels in the epoch: every output is finite (and sums to T where declared), the model stays finite,
an absent task's head is not moved by a step where it has no label (plain SGD), the global RNG is untouched,
`syncs_host = False` still holds, and the run is deterministic and resumes as above.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import random
import sys
import typing
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from mtlbench import hyperparams
from mtlbench.model import HarnessModel
from mtlbench.config import RunConfig
from mtlbench.errors import UserError
from mtlbench.losses import TaskLoss
from mtlbench.methods.base import EpochStats, Method, StepOutput
from mtlbench.methods.params import WEIGHT_SCALES

SYNCING = {
    "item",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "tolist",
    "numpy",
    "__array__",
    "cpu",
    "nonzero",
    "equal",
    "masked_select",
    "unique",
    "argwhere",
}  # the last: output size from the data


class ConformanceError(AssertionError):
    """A method breaks a rule of the method contract."""


class SyncCounter(TorchFunctionMode):
    """Counts calls that read a tensor's value on the host (`.item()`, `bool(t)`, `.cpu()`, …).

    Calls from torch.optim are not counted: its step counters live on the host, and reading them
    never waits for the device.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        boolean_index = name == "__getitem__" and any(
            isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in _flat(args[1:])
        )
        if (name in SYNCING or boolean_index) and not _from_optimizer():
            self.calls["boolean indexing" if boolean_index else name] += 1
        return func(*args, **(kwargs or {}))


def _flat(items: Any) -> list[Any]:
    out: list[Any] = []
    for item in items:
        out += _flat(item) if isinstance(item, (tuple, list)) else [item]
    return out


def _from_optimizer() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if f"torch{os.sep}optim{os.sep}" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


class TinyMultiTaskModel(HarnessModel):
    """A two-layer trunk with BatchNorm and one logit per task: the harness model's interface
    (shared/last-shared/head parameters, forward → (features, logits)) at a size that runs in ms."""

    def __init__(self, num_tasks: int, inputs: int = 12, width: int = 8):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(inputs, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()
        )
        self.heads = nn.Linear(width, num_tasks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits)."""
        features = self.trunk(x)
        return features, self.heads(features)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The trunk's parameters."""
        return list(self.trunk.parameters())

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The trunk's last linear layer's weight."""
        return [self.trunk[3].weight]

    def head_parameters(self) -> list[nn.Parameter]:
        """The task heads' parameters."""
        return list(self.heads.parameters())


@dataclass
class Trace:
    """What a method returned and did over a short run."""

    outputs: list[dict[str, torch.Tensor | None]] = field(default_factory=list)
    syncs: Counter = field(default_factory=Counter)
    rng_touched: list[str] = field(default_factory=list)


@dataclass
class Harness:
    """A tiny model, its data and optimizer, and the method under test, all seeded."""

    cls: type
    num_tasks: int = 5
    batch: int = 8
    steps: int = 10
    epoch_every: int = 3  # end_epoch after this many steps: 3 epoch ends, so per-epoch methods update twice
    seed: int = 0
    dtype: torch.dtype = torch.float32
    missing: bool = False  # NaN labels (see `absent`), trained with a masked TaskLoss

    # With `missing`: the task without any label in these batches (the whole first epoch, the very first
    # batch included, and one batch after the resume cut); every other label is missing with probability ¼.
    ABSENT_TASK: ClassVar[int] = 1
    ABSENT_BATCHES: ClassVar[tuple[int, ...]] = (0, 1, 2, 7)

    def tasks(self) -> tuple[str, ...]:
        """Task names."""
        return tuple(f"task{t}" for t in range(self.num_tasks))

    def batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`steps` batches whose labels depend on the inputs (so the tasks partly conflict)."""
        gen = torch.Generator().manual_seed(self.seed)
        mix = torch.randn(12, self.num_tasks, generator=gen)
        out = []
        for _ in range(self.steps):
            x = torch.randn(self.batch, 12, generator=gen)
            y = ((x @ mix + 0.5 * torch.randn(self.batch, self.num_tasks, generator=gen)) > 0.3).float()
            out.append((x.to(self.dtype), y.to(self.dtype)))
        if self.missing:
            for k, (x, y) in enumerate(out):
                drop = torch.rand(y.shape, generator=gen) < 0.25
                drop[0] = False  # the first image has every other label: every other task has one in each batch
                if k in self.ABSENT_BATCHES:
                    drop[:, self.ABSENT_TASK] = True
                out[k] = (x, torch.where(drop, torch.full_like(y, math.nan), y))
        return out

    def absent(self, k: int) -> list[int]:
        """The tasks without any label in batch k."""
        _, y = self.batches()[k]
        return torch.isnan(y).all(dim=0).nonzero().squeeze(1).tolist()

    def task_loss(self) -> TaskLoss | None:
        """The masked per-task loss where labels are missing (else the trainer's default)."""
        return TaskLoss("bce", "bce", masked=True) if self.missing else None

    def fresh(self) -> tuple[TinyMultiTaskModel, Method, torch.optim.Optimizer]:
        """Model, method (own generator) and optimizer as every run starts them."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = TinyMultiTaskModel(self.num_tasks).to(self.dtype).train()
        method = self.cls(self.tasks(), generator=torch.Generator().manual_seed(self.seed + 1))
        labels = torch.cat([y for _, y in self.batches()])
        # as the loop does: uint8 where labels are complete, float32 with NaN where some are missing
        method.bind_training_labels(labels.float() if self.missing else labels.to(torch.uint8))
        groups = [{"params": list(model.parameters())}] + method.optimizer_groups()
        return model, method, torch.optim.SGD(groups, lr=0.05)

    def epoch_stats(self, epoch: int) -> EpochStats:
        """Per-task statistics that differ between tasks and epochs."""
        t = torch.arange(self.num_tasks, dtype=torch.float64)
        stats = EpochStats(
            epoch, 0.6 - 0.03 * t * (epoch + 1), 0.7 + 0.04 * t, 0.65 - 0.02 * t, 0.72 + 0.03 * t, 0.7 + 0.02 * t
        )
        if not self.missing:
            return stats
        batches = self.batches()[epoch * self.epoch_every : (epoch + 1) * self.epoch_every]
        labelled = sum((~torch.isnan(y)).sum(dim=0).double() for _, y in batches)
        none = labelled == 0  # as the trainer reports a task without labels: NaN statistics
        nan = lambda v: torch.where(none, torch.full_like(v, math.nan), v)  # noqa: E731
        return EpochStats(
            epoch,
            nan(stats.train_loss),
            nan(stats.train_accuracy),
            nan(stats.val_loss),
            nan(stats.val_accuracy),
            nan(stats.val_auroc),
            labelled=labelled,
        )

    def run(
        self, model: nn.Module, method: Method, optimizer: torch.optim.Optimizer, first: int, last: int, trace: Trace
    ) -> None:
        """Steps first … last−1 through the trainer's training step, recording the method's outputs."""
        from mtlbench.training import training_step

        config = replace(RunConfig(), device="cpu", precision="fp32", head="bce", grad_engine="loop")
        real_step, real_after = method.step, method.after_update

        def recorded(name: str, call: Callable[..., Any], *args: Any) -> Any:
            before = _global_rng_states()
            counter = SyncCounter()
            with counter:
                result = call(*args)
            trace.syncs.update(counter.calls)
            touched = [k for k, v in _global_rng_states().items() if not _equal(v, before[k])]
            trace.rng_touched += [f"{name} changed the {k} RNG" for k in touched]
            return result

        def step(ctx):
            out = recorded("step", real_step, ctx)
            trace.outputs.append(_check_output(self.cls, out, ctx, self.num_tasks))
            return out

        method.step = step  # instance attributes: the trainer calls these
        method.after_update = lambda ctx, reevaluate: recorded("after_update", real_after, ctx, reevaluate)
        try:
            data = self.batches()
            for k in range(first, last):
                training_step(
                    model,
                    method,
                    optimizer,
                    *data[k],
                    config,
                    k,
                    k // self.epoch_every,
                    torch.device("cpu"),
                    task_loss=self.task_loss(),
                )
                if (k + 1) % self.epoch_every == 0:
                    method.end_epoch(self.epoch_stats(k // self.epoch_every))
        finally:
            del method.step, method.after_update


def _global_rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["CUDA"] = torch.cuda.get_rng_state_all()
    return states


def _equal(a: Any, b: Any) -> bool:
    """Exact equality of nested states (tensors, arrays, dicts, sequences, scalars)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return bool(a == b) or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def check_method(cls: type) -> None:
    """Run every conformance check on the method class `cls`; raise ConformanceError on the first failure."""
    label = cls.label() if hasattr(cls, "label") else getattr(cls, "__name__", str(cls))
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ConformanceError(f"{label}: not a subclass of mtlbench.methods.base.Method")
    try:
        _check_hyperparameters(cls, label)
        _check_training(cls, label)
        _check_missing_labels(cls, label)
    except ConformanceError:
        raise
    except Exception as exc:  # noqa: BLE001  (any crash of the method is a failed check, named)
        raise ConformanceError(f"{label}: raised {type(exc).__name__}: {exc}") from exc


def _fail(label: str, rule: str) -> None:
    raise ConformanceError(f"{label}: {rule}")


def _check_hyperparameters(cls: type, label: str) -> None:
    defaults = cls.Params()
    cls(("a", "b", "c"))  # the defaults construct
    if cls.weight_scale not in WEIGHT_SCALES:
        _fail(label, f"weight_scale {cls.weight_scale!r} is not one of {', '.join(WEIGHT_SCALES)}")
    if not cls.reevaluates and type.__getattribute__(cls, "after_update") is not Method.after_update:
        _fail(label, "overrides after_update but does not set reevaluates = True: the trainer never calls it")
    as_json = json.dumps(asdict(defaults), sort_keys=True)
    # JSON and back unchanged: then the run's identity, a digest of sorted JSON, is the same in every process
    if json.loads(as_json) != asdict(defaults):
        _fail(label, "hyperparameters do not survive JSON (e.g. a tuple or a set): the run's identity would drift")
    explicit = hyperparams.make_params(cls.Params, json.loads(as_json), label)
    if asdict(explicit) != asdict(defaults):
        _fail(label, "the defaults written out explicitly are not the defaults")
    if cls.name:  # a registered method: explicit defaults and none are one cell
        implicit = RunConfig(method=cls.name).config_hash()
        if RunConfig(method=cls.name, method_params=asdict(defaults)).config_hash() != implicit:
            _fail(label, "explicit default hyperparameters hash to a different cell than none")
    hints = hyperparams.field_types(cls.Params)
    for f in fields(cls.Params):
        bad_values: list[Any] = [[1.0]]  # a list is never a valid scalar hyperparameter
        arms = _arms(hints[f.name])
        if float in arms:
            bad_values += [math.nan, math.inf]
        if str in arms or any(typing.get_origin(a) is typing.Literal for a in arms):
            bad_values.append("no-such-choice\x00")  # a choice or a path: either way refused
        for bad in bad_values:
            try:
                hyperparams.check_params(hyperparams.make_params(cls.Params, {f.name: bad}, label), label, ("a", "b"))
            except UserError as exc:
                if "\n" in str(exc).strip():
                    _fail(label, f"the error for {f.name}={bad!r} is not one line")
                continue
            _fail(label, f"the hyperparameter {f.name}={bad!r} is accepted; declare its type and range")


def _arms(hint: Any) -> list[Any]:
    if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)]
    return [hint]


def _check_output(cls: type, out: Any, ctx: Any, num_tasks: int) -> dict[str, torch.Tensor | None]:
    label = cls.label()
    if not isinstance(out, StepOutput):
        _fail(label, f"step returned {type(out).__name__}, not a StepOutput")
    if out.weights is None and out.objective is None and out.shared_grad is None:
        _fail(label, "step returned neither weights, an objective nor a shared gradient")
    if (out.weights is None) != (cls.weight_scale == "no-weights"):
        _fail(
            label,
            "returns no weights but does not declare weight_scale 'no-weights'"
            if out.weights is None
            else "declares weight_scale 'no-weights' but returns weights",
        )
    losses = ctx.losses
    if out.weights is not None:
        w = out.weights
        if w.shape != (num_tasks,):
            _fail(label, f"weights have shape {tuple(w.shape)}, not ({num_tasks},)")
        if w.device != losses.device or w.dtype != losses.dtype:
            _fail(label, f"weights are {w.dtype} on {w.device}; the losses are {losses.dtype} on {losses.device}")
        if not bool(torch.isfinite(w).all()):
            _fail(label, f"weights are not finite: {w.tolist()}")
        if cls.weight_scale == "sum-to-T" and abs(float(w.sum()) - num_tasks) > 1e-4 * num_tasks:
            _fail(label, f"declares weight_scale sum-to-T but its weights sum to {float(w.sum()):.6g}, not {num_tasks}")
    if out.objective is not None:
        if out.objective.dim() != 0 or not out.objective.requires_grad or not bool(torch.isfinite(out.objective)):
            _fail(label, "the objective must be a finite scalar attached to the losses' graph")
    if out.shared_grad is not None:
        if ctx.grads is None:
            _fail(label, f"returned a shared gradient in the {cls.needs!r} space, which has none")
        if out.shared_grad.shape != (ctx.grads.shape[1],):
            _fail(
                label,
                f"shared_grad has shape {tuple(out.shared_grad.shape)}; its space's gradients have "
                f"({ctx.grads.shape[1]},)",
            )
        if not bool(torch.isfinite(out.shared_grad).all()):
            _fail(label, "shared_grad is not finite")
    return {
        k: None if v is None else v.detach().clone()
        for k, v in (("weights", out.weights), ("objective", out.objective), ("shared_grad", out.shared_grad))
    }


def _check_training(cls: type, label: str) -> None:
    harness = Harness(cls)
    model, method, optimizer = harness.fresh()
    first = Trace()
    harness.run(model, method, optimizer, 0, harness.steps, first)
    if first.rng_touched:
        _fail(label, f"{first.rng_touched[0]}; draw from self.generator_")
    if not cls.syncs_host and first.syncs:
        _fail(label, f"declares syncs_host = False but read tensors on the host: {dict(first.syncs)}")
    registered = {id(t) for t in method.state_dict(keep_vars=True).values() if isinstance(t, torch.Tensor)}
    stray = [n for n, v in vars(method).items() if isinstance(v, torch.Tensor) and id(v) not in registered]
    if stray:
        _fail(
            label,
            f"tensor state {', '.join(stray)} is not a registered buffer or parameter: to() and checkpoints miss it",
        )

    _check_repeatable(harness, label, first)

    # The losses' dtype decides the outputs' (the trainer gives float32 or float64 losses).
    wide = Harness(cls, steps=4, dtype=torch.float64)
    model, method, optimizer = wide.fresh()
    wide.run(model, method, optimizer, 0, wide.steps, Trace())


def _check_repeatable(harness: Harness, label: str, first: Trace) -> None:
    """A second run equals `first`, and a run interrupted after the second epoch end and restored from its
    saved state goes on as the uninterrupted one."""
    again = Trace()
    model2, method2, optimizer2 = harness.fresh()
    harness.run(model2, method2, optimizer2, 0, harness.steps, again)
    if not _same(first.outputs, again.outputs):
        _fail(label, "two runs with the same generator seed differ: the method is not deterministic")

    # Interrupt after the second epoch end (per-epoch methods have updated), save, restore into
    # fresh objects, go on: the steps and the final state must equal the uninterrupted run's.
    cut = 2 * harness.epoch_every
    model, method, optimizer = harness.fresh()
    harness.run(model, method, optimizer, 0, cut, Trace())
    buffer = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "method": method.state_dict()}, buffer
    )
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    straight = Trace()
    harness.run(model, method, optimizer, cut, harness.steps, straight)
    model_r, method_r, optimizer_r = harness.fresh()
    model_r.load_state_dict(saved["model"])
    optimizer_r.load_state_dict(saved["optimizer"])
    method_r.load_state_dict(copy.deepcopy(saved["method"]))
    resumed = Trace()
    harness.run(model_r, method_r, optimizer_r, cut, harness.steps, resumed)
    if not _same(straight.outputs, resumed.outputs) or not _equal(method.state_dict(), method_r.state_dict()):
        _fail(label, "the steps after restoring state_dict differ from the uninterrupted ones")


def _check_missing_labels(cls: type, label: str) -> None:
    """The run on batches with missing labels (see Harness.missing), one step at a time."""
    harness = Harness(cls, missing=True)
    model, method, optimizer = harness.fresh()
    first = Trace()
    head = model.heads
    for k in range(harness.steps):
        before = (head.weight.detach().clone(), head.bias.detach().clone())
        harness.run(model, method, optimizer, k, k + 1, first)
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            _fail(label, f"with missing labels the model's parameters are not finite after step {k}")
        for t in harness.absent(k):
            if not (torch.equal(head.weight[t], before[0][t]) and torch.equal(head.bias[t], before[1][t])):
                _fail(
                    label, f"with missing labels step {k} moved the head of task {t}, which had no label in the batch"
                )
    if first.rng_touched:
        _fail(label, f"with missing labels {first.rng_touched[0]}; draw from self.generator_")
    if not cls.syncs_host and first.syncs:
        _fail(
            label, f"declares syncs_host = False but with missing labels read tensors on the host: {dict(first.syncs)}"
        )
    _check_repeatable(harness, label, first)


def _same(a: list[dict[str, torch.Tensor | None]], b: list[dict[str, torch.Tensor | None]]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        for key in x:
            if (x[key] is None) != (y[key] is None):
                return False
            if x[key] is not None and not torch.equal(x[key], y[key]):
                return False
    return True
