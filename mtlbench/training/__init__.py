"""Training: one run from its config to its stored result.

Rooms, in the order a run passes through them:

* factories — device and runtime choices, model, method, optimizer, schedule;
* step — one optimizer step (the method's gradient space decides what is backpropagated),
  the gradient-free re-evaluation of a batch, the process warm-up;
* evaluation — metrics of a model on a whole split;
* state — what a run carries between epochs and saves in its checkpoint; start or resume;
* loop — the epoch loop, model selection and the test, writing through a sink;
* sink — where results go (the results database, in owner-checked transactions);
* tensorboard_sink — an extra view of each run's epochs (`--tensorboard`), never failing a run;
* run — claim, train, classify failures (out of memory, divergence, anything else).

May import: torch, mtlbench's harness modules (config, model, batches, grads, spaces, costs,
backend, checkpoint, task_metrics, results) and the method contract. Nothing here branches on a
method's name.
"""

from mtlbench.training.evaluation import evaluate
from mtlbench.training.factories import (
    ModelFactory,
    build_method,
    build_model,
    build_optimizer,
    build_schedule,
    resolve_device,
    resolve_runtime,
)
from mtlbench.training.loop import DIVERGENCE_CHECK_EVERY, RunReporter
from mtlbench.training.run import RunResult, SilentReporter, is_out_of_memory, release_memory, train_run
from mtlbench.training.step import StepRecord, batch_losses, epoch_batches, training_step, warm_up

__all__ = [
    "DIVERGENCE_CHECK_EVERY",
    "ModelFactory",
    "RunReporter",
    "RunResult",
    "SilentReporter",
    "StepRecord",
    "batch_losses",
    "build_method",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "epoch_batches",
    "evaluate",
    "is_out_of_memory",
    "release_memory",
    "resolve_device",
    "resolve_runtime",
    "train_run",
    "training_step",
    "warm_up",
]
