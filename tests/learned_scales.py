"""Checks shared by the methods whose task weights are learnable parameters (uncertainty weighting, IMTL-L)."""

from __future__ import annotations

from typing import Sequence

import torch

from mtlbench.methods.base import Method, StepContext


def set_parameter(method: Method, name: str, values: Sequence[float]) -> Method:
    """`method` with its learnable parameter `name` set to `values` (no gradient recorded)."""
    with torch.no_grad():
        getattr(method, name).copy_(torch.tensor(values))
    return method


def assert_starts_as_equal_weighting(method: Method, name: str, losses: Sequence[float]) -> None:
    """A fresh method weighs every task 1, its only parameter is `name` (trained, at the run's lr without
    weight decay), and its weights change every step."""
    out = method.step(StepContext(torch.tensor(losses), 0, 0))
    assert out.weights.tolist() == [1.0] * len(losses)
    parameter = getattr(method, name)
    assert list(method.parameters()) == [parameter] and parameter.requires_grad
    assert method.optimizer_groups() == [{"params": [parameter], "weight_decay": 0.0}]
    assert method.weights_changed_per_step() and type(method).weight_scale == "learned"


def train_alone(method: Method, losses: Sequence[float], steps: int) -> torch.Tensor:
    """Train only `method`'s parameters (SGD, lr 0.1) for `steps` steps on fixed `losses`; its weights then."""
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    for step in range(steps):
        optimizer.zero_grad()
        method.step(StepContext(torch.tensor(losses), step, 0)).objective.backward()
        optimizer.step()
    return method.step(StepContext(torch.tensor(losses), 0, 0)).weights
