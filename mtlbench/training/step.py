"""One training step, the gradient-free re-evaluation of a batch, and the process warm-up."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import torch

from mtlbench import backend, costs
from mtlbench.config import Head, RunConfig
from mtlbench.datasets.base import DatasetBundle
from mtlbench.batches import DeviceSplit, eval_batches, train_batches
from mtlbench.methods.base import Method, StepContext
from mtlbench.losses import TaskLoss
from mtlbench.model import HarnessModel, positive_probability
from mtlbench.task_metrics import THRESHOLD
from mtlbench.training.factories import build_method, build_model, build_optimizer, resolve_runtime


@dataclass
class StepRecord:
    """What one training step produced, detached: per-task losses, float32 logits, the weights used
    (None for a method without task weights), the batch's correct predictions per task."""

    losses: torch.Tensor
    logits: torch.Tensor
    weights: torch.Tensor | None
    correct: torch.Tensor  # (T,) int64, as in StepContext.correct
    labelled: torch.Tensor | None = None  # (T,) int64, as in StepContext.labelled


def correct_predictions(logits: torch.Tensor, targets: torch.Tensor, head: Head) -> torch.Tensor:
    """Correct predictions per task in a batch, (T,) int64 on the logits' device (no host sync): P(finding
    present) above the 0.5 threshold (with two logits, their argmax) against the 0/1 targets (B, T); an
    image without a label for a task (NaN) is neither correct nor wrong."""
    hits = (positive_probability(logits.detach(), head) > THRESHOLD) == (targets > 0.5)
    if targets.is_floating_point():
        hits &= ~torch.isnan(targets)
    return hits.sum(dim=0)


def training_step(
    model: HarnessModel,
    method: Method,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    config: RunConfig,
    step: int,
    epoch: int,
    device: torch.device,
    timer: costs.StepTimer | None = None,
    task_loss: TaskLoss | None = None,
) -> StepRecord:
    """One optimizer step: forward, per-task losses, the method's decision, backward, update, and the
    method's re-evaluation of the batch if it asks for one.

    The method's gradient space computes the per-task gradients it declared and applies its
    decision (mtlbench/spaces.py). `timer` (optional) marks what only the method adds (per-task
    gradients, its own computation, its re-evaluation); the forward/backward every method pays
    is outside it. The previous step's gradients are freed before the forward and the per-task
    Jacobian before the update, so a gradient method never holds both. `task_loss` is the run's
    per-task loss (mtlbench.losses; default: BCE, or 2-class CE with `--head ce2`).
    """
    task_loss = task_loss if task_loss is not None else TaskLoss("bce", config.head)
    optimizer.zero_grad(set_to_none=True)
    with backend.autocast(config.precision, device):
        features, logits = model(x)
    logits = backend.at_least_float32(logits)  # losses, metrics and methods never see bf16
    losses = task_loss(logits, y)
    correct = correct_predictions(logits, y, config.head)
    labelled = task_loss.labelled_counts(y)

    space = method.space()
    if timer is not None:
        timer.method_start()
    task_grads = space.per_task_gradients(losses, model, features, config.grad_engine)
    at = tuple(t.detach() for t in space.tensors(model, features)) if space.per_task else None
    ctx = StepContext(
        losses=losses, step=step, epoch=epoch, grads=task_grads, space_tensors=at, correct=correct, labelled=labelled
    )
    out = method.step(ctx)
    ctx, task_grads = replace(ctx, grads=None), None  # the (T, P) Jacobian: the method has what it needs from it
    if timer is not None:
        timer.method_end()

    space.backward(out, losses, model, features)
    optimizer.step()
    if method.reevaluates:
        if timer is not None:
            timer.method_start()
        method.after_update(ctx, lambda: batch_losses(model, x, y, config, device, task_loss))
        if timer is not None:
            timer.method_end()
    weights = None if out.weights is None else out.weights.detach()
    return StepRecord(losses.detach(), logits.detach(), weights, correct, labelled)


@torch.no_grad()
def batch_losses(
    model: HarnessModel,
    x: torch.Tensor,
    y: torch.Tensor,
    config: RunConfig,
    device: torch.device,
    task_loss: TaskLoss | None = None,
) -> torch.Tensor:
    """The per-task losses (T,) of a batch at the model's current parameters, without a graph.

    The model stays in its mode: in training mode, as FAMO's authors re-evaluate (their CelebA
    trainer), BatchNorm normalizes with the batch's statistics and updates its running ones.
    """
    with backend.autocast(config.precision, device):
        _, logits = model(x)
    task_loss = task_loss if task_loss is not None else TaskLoss("bce", config.head)
    return task_loss(backend.at_least_float32(logits), y)


def epoch_batches(
    split: DeviceSplit, config: RunConfig, epoch: int, device: torch.device, batch_size: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch's training batches as `config` makes them: its batch size (unless `batch_size`), data-order
    seed, input normalization and augmentation."""
    return train_batches(
        split,
        batch_size or config.batch_size,
        config.seed,
        epoch,
        device,
        config.normalize_mean,
        config.normalize_std,
        config.augment,
        config.hflip,
    )


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
    batch = next(epoch_batches(split, ew, 0, device, batch_size=min(config.batch_size, len(split))))
    model.train()
    for step in range(steps):
        training_step(model, method, optimizer, *batch, ew, step, 0, device)
    batch_losses(model, *batch, ew, device)  # a gradient-free training-mode forward, as a re-evaluating method makes
    with torch.no_grad(), backend.autocast(ew.precision, device):  # the evaluation batch shape too
        model.eval()
        eval_batch = next(
            eval_batches(split, config.eval_batch_size, device, config.normalize_mean, config.normalize_std)
        )
        model(eval_batch[0])
    costs.now(device)
