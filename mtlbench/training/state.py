"""What a run carries between epochs and saves in its checkpoint, and how a run starts or resumes."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from mtlbench import checkpoint
from mtlbench.config import RunConfig
from mtlbench.methods.base import Method
from mtlbench.model import HarnessModel
from mtlbench.results.store import ResultsStore
from mtlbench.training.factories import ModelFactory, build_method, build_model, build_optimizer, build_schedule


@dataclass
class LoopState:
    """What the training loop carries from one epoch to the next (saved in each checkpoint).

    `wall_s` and the peaks are those of earlier attempts, up to their last checkpoint: a resumed
    run's cost is the cost of the work that produced it, not of the work a kill threw away. So are
    the step times and the other load measured while they trained.
    """

    epoch: int = 0  # the next epoch to train
    global_step: int = 0
    step_times: list[float] = field(default_factory=list)
    method_times: list[float] = field(default_factory=list)
    step_cpu_times: list[float] = field(default_factory=list)  # process CPU seconds per step
    other_cpu_s: float = 0.0  # CPU seconds other processes used on this run's CPUs while it trained
    capacity_s: float = 0.0  # CPU seconds those CPUs offered meanwhile (wall × CPUs)
    train_s: float = 0.0
    eval_s: float = 0.0
    wall_s: float = 0.0
    peak_cuda_mb: float | None = None
    peak_rss_mb: float | None = None
    best_score: float = -math.inf  # validation mean AUROC (or −loss) of the selected epoch
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    best_val_probs: torch.Tensor | None = None
    unlabelled_task_steps: int = 0  # (task, step) pairs whose batch had no label for the task


@dataclass
class RunParts:
    """The live objects of one run that a checkpoint saves and restores."""

    model: HarnessModel
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    method: Method
    device: torch.device


def checkpoint_payload(parts: RunParts, loop: LoopState, run_id: int, config_hash: str) -> dict[str, Any]:
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


def restore(parts: RunParts, payload: dict[str, Any]) -> LoopState:
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


def fresh_parts(
    config: RunConfig,
    tasks: tuple[str, ...],
    device: torch.device,
    n_steps: int,
    model_factory: ModelFactory | None = None,
) -> RunParts:
    """Model, optimizer, schedule and method as every run of this seed starts them."""
    torch.manual_seed(config.seed)  # identical initial weights for every method of a seed
    model = (model_factory or build_model)(config, len(tasks), device)
    method = build_method(config, tasks).to(device)  # its randomness is its own generator's
    optimizer = build_optimizer(config, model, method)
    schedule = build_schedule(config, optimizer, n_steps * config.epochs)
    return RunParts(model, optimizer, schedule, method, device)


def start_or_resume(
    config: RunConfig,
    tasks: tuple[str, ...],
    device: torch.device,
    n_steps: int,
    store: ResultsStore,
    run_id: int,
    ckpt_path: Path,
    taken_over: bool,
    model_factory: ModelFactory | None = None,
) -> tuple[RunParts, LoopState, str]:
    """Fresh parts, or, for a taken-over run with a usable checkpoint, the parts and loop state it saved.

    A checkpoint that does not load, or no longer fits this code (a method's state changed), is
    not trusted: the run restarts from epoch 0 and says why.
    """
    parts = fresh_parts(config, tasks, device, n_steps, model_factory)
    if not taken_over:
        checkpoint.remove_checkpoint(ckpt_path)  # a stale file from an earlier database is never trusted
        return parts, LoopState(), ""
    payload, why = checkpoint.load_checkpoint(ckpt_path, run_id, config.config_hash(), device)
    if payload is not None:
        try:
            loop = restore(parts, payload)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            why = f"checkpoint {ckpt_path.name} does not fit this version ({type(exc).__name__}); restarting the run"
            parts = fresh_parts(config, tasks, device, n_steps, model_factory)  # the partial restore is thrown away
        else:
            store.rewind_run(run_id, loop.epoch)
            return parts, loop, f" (resumed at epoch {loop.epoch + 1})"
        finally:
            del payload
    checkpoint.remove_checkpoint(ckpt_path)
    store.restart_run(run_id)
    return parts, LoopState(), "" if why == "no checkpoint" else f" ({why})"
