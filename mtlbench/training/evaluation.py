"""Evaluation of a model on a whole split."""

from __future__ import annotations

import numpy as np
import torch

from mtlbench import backend
from mtlbench.config import RunConfig
from mtlbench.batches import DeviceSplit, eval_batches
from mtlbench.task_metrics import TaskMetrics, task_metrics
from mtlbench.losses import TaskLoss
from mtlbench.model import HarnessModel, positive_probability

EVAL_AUGMENT_STREAM = 0xE7A1  # `--augment-eval`'s draws: a stream apart from the training order's and augmentation's


@torch.no_grad()
def evaluate(
    model: HarnessModel, split: DeviceSplit, config: RunConfig, device: torch.device, task_loss: TaskLoss | None = None
) -> tuple[TaskMetrics, np.ndarray]:
    """Metrics of `model` on a whole split and its probabilities (N, T); logits and losses stay on the
    device until the end. The losses are the run's training loss `task_loss` (default BCE / 2-class CE)."""
    task_loss = task_loss if task_loss is not None else TaskLoss("bce", config.head)
    model.eval()
    probs, loss_sum = [], torch.zeros(split.labels.shape[1], device=device, dtype=torch.float64)
    augment = config.augment if config.augment_eval else "none"
    rng = np.random.default_rng([config.seed, EVAL_AUGMENT_STREAM])  # the same draws at every evaluation
    batches = eval_batches(
        split, config.eval_batch_size, device, config.normalize_mean, config.normalize_std, augment, rng, config.hflip
    )
    labelled = torch.zeros_like(loss_sum)
    for x, y in batches:
        with backend.autocast(config.precision, device):
            _, logits = model(x)
        logits = backend.at_least_float32(logits)
        counts = task_loss.labelled_counts(y)
        loss_sum += task_loss(logits, y).double() * (y.shape[0] if counts is None else counts)
        labelled += y.shape[0] if counts is None else counts
        probs.append(positive_probability(logits, config.head))
    p = torch.cat(probs).cpu().numpy()
    if task_loss.masked:  # a task without a labelled image in the split has no loss (NaN)
        loss = (loss_sum / torch.where(labelled > 0, labelled, torch.full_like(labelled, float("nan")))).cpu().numpy()
    else:
        loss = (loss_sum / len(split)).cpu().numpy()
    return task_metrics(split.labels.numpy(), p, loss), p
