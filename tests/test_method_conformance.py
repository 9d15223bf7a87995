"""The conformance check runs over every registered method, and each of its rules can fail."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from mtlbench.conformance import ConformanceError, check_method
from mtlbench.methods.base import Method, StepContext, StepOutput
from mtlbench.registry import METHODS


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_conforms(name: str) -> None:
    check_method(METHODS.get(name))


class Good(Method):
    """Equal weighting, written as a user would (unregistered)."""

    syncs_host = False

    def step(self, ctx: StepContext) -> StepOutput:
        return StepOutput(weights=torch.ones_like(ctx.losses.detach()))


def test_a_correct_unregistered_method_passes() -> None:
    check_method(Good)


class WrongShape(Good):
    def step(self, ctx):
        return StepOutput(weights=torch.ones(3))


class GlobalRandom(Good):
    def step(self, ctx):
        return StepOutput(weights=torch.softmax(torch.randn(len(ctx.losses)), 0) * len(ctx.losses))


class StrayTensor(Good):
    def step(self, ctx):
        self.total_ = ctx.losses.detach().sum()  # state, but not a registered buffer
        return super().step(ctx)


class ReadsOnHost(Good):
    def step(self, ctx):
        if ctx.losses.sum().item() > 0:  # a host sync, though the class says it makes none
            pass
        return super().step(ctx)


class ForgetsState(Good):
    """Keeps a counter outside the saved state (no trailing underscore): a restore loses it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.count = 0

    def step(self, ctx):
        self.count += 1
        return StepOutput(weights=torch.full_like(ctx.losses.detach(), float(self.count)))

    weight_scale = "none"


class NotSumToT(Good):
    def step(self, ctx):
        return StepOutput(weights=torch.full_like(ctx.losses.detach(), 2.0))


@dataclass
class UncheckedParams:
    mode: str = "a"

    def check(self, method, task_names):
        """Forgets to check `mode`."""


class UncheckedText(Good):
    Params = UncheckedParams


class NothingReturned(Good):
    def step(self, ctx):
        return StepOutput()


class NumpyRandom(Good):
    def step(self, ctx):
        np.random.rand()
        return super().step(ctx)


class PlainTensor(Good):
    def step(self, ctx):
        self.last = ctx.losses.detach().clone()  # a tensor attribute without the trailing underscore
        return super().step(ctx)


class HookWithoutFlag(Good):
    def after_update(self, ctx, reevaluate):
        reevaluate()


class ObjectiveOnly(Good):
    def step(self, ctx):
        return StepOutput(objective=ctx.losses.sum())


class AlwaysFloat32(Good):
    def step(self, ctx):
        return StepOutput(weights=torch.ones(len(ctx.losses)))  # float32 whatever the losses are


@pytest.mark.parametrize(
    "cls, rule",
    [
        (WrongShape, "shape"),
        (GlobalRandom, "changed the torch RNG"),
        (NumpyRandom, "changed the numpy RNG"),
        (PlainTensor, "not a registered buffer"),
        (HookWithoutFlag, "does not set reevaluates"),
        (ObjectiveOnly, "does not declare weight_scale 'no-weights'"),
        (AlwaysFloat32, "weights are torch.float32"),
        (StrayTensor, "not a registered buffer"),
        (ReadsOnHost, "syncs_host = False"),
        (ForgetsState, "after restoring state_dict"),
        (NotSumToT, "sum-to-T"),
        (UncheckedText, "mode="),
        (NothingReturned, "neither weights"),
    ],
)
def test_each_rule_catches_its_violation(cls: type, rule: str) -> None:
    with pytest.raises(ConformanceError, match=rule):
        check_method(cls)
