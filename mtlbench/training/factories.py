"""Building a run's parts from its config: device, runtime choices, model, method, optimizer, schedule."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable

import torch

from mtlbench import backend, grads
from mtlbench.config import RunConfig
from mtlbench.errors import UserError
from mtlbench.methods.base import Method
from mtlbench.model import HarnessModel, ModelSpec, MultiTaskNet
from mtlbench.registry import METHODS


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


ModelFactory = Callable[[RunConfig, int, torch.device], HarnessModel]
"""Builds a run's model from its config, its number of tasks and its device (`build_model`'s signature)."""


def build_model(config: RunConfig, num_tasks: int, device: torch.device) -> MultiTaskNet:
    """The harness model for `config` on `device`, in the device's fast memory layout."""
    spec = ModelSpec(num_tasks, config.head, config.pretrained, config.freeze_trunk, config.arch, config.neck)
    model = backend.prepare_model(MultiTaskNet(spec), device)
    if config.compile:
        model.compile()  # compiles the module's call in place; parameters and state_dict keys unchanged
    return model


def build_method(config: RunConfig, task_names: tuple[str, ...]) -> Method:
    """The configured method with its hyperparameters and its own RNG (not the data RNG)."""
    cls = METHODS.get(config.method)
    params = cls.make_params(config.method_params)
    generator = torch.Generator().manual_seed(config.seed + 7919)
    return cls(task_names, params, generator=generator)


def build_optimizer(config: RunConfig, model: torch.nn.Module, method: Method) -> torch.optim.Optimizer:
    """The run's optimizer (the sweep's, or its method's own from `--method-optimizers`) over the model and the
    method's own groups (`Method.optimizer_groups`)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": trainable, "weight_decay": config.weight_decay}]
    groups += method.optimizer_groups()
    optimizer = config.method_optimizer()
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    if optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)


def build_schedule(config: RunConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """Per-step LR schedule: cosine decay to 0 over the run, or constant."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / max(total_steps, 1)))
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
