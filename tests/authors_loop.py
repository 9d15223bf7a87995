"""Set-up shared by the tests that run a method through the trainer and its authors' loop written out
side by side: the same batches, two copies of one tiny model, and the check that both end equal."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Callable

import torch

from mtlbench.config import RunConfig
from mtlbench.conformance import Harness, TinyMultiTaskModel
from mtlbench.methods.base import Method, StepOutput
from mtlbench.training import training_step

NUM_TASKS = 5
LR = 0.05


@dataclass
class TwinRun:
    """`ours` trained by the harness's training step; `theirs` (an exact copy before) for the authors' loop."""

    batches: list[tuple[torch.Tensor, torch.Tensor]]
    ours: TinyMultiTaskModel
    theirs: TinyMultiTaskModel

    def train_ours(self, method: Method, epoch_of: Callable[[int], int] = lambda step: 0) -> list[StepOutput]:
        """Every batch through `training_step` with SGD(lr 0.05), on the CPU in fp32; the steps' outputs."""
        config = replace(RunConfig(), device="cpu", precision="fp32", head="bce", grad_engine="loop")
        optimizer = torch.optim.SGD(self.ours.parameters(), lr=LR)
        return [
            training_step(self.ours, method, optimizer, x, y, config, k, epoch_of(k), torch.device("cpu"))
            for k, (x, y) in enumerate(self.batches)
        ]

    def their_optimizer(self) -> torch.optim.Optimizer:
        """The authors' loop's SGD(lr 0.05) over `theirs`."""
        return torch.optim.SGD(self.theirs.parameters(), lr=LR)

    def assert_same_models(self) -> None:
        """Both models' parameters and buffers equal to float32 round-off."""
        for a, b in zip(self.ours.state_dict().values(), self.theirs.state_dict().values()):
            assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-7)


def twin_run(method_class: type[Method], steps: int) -> TwinRun:
    """`steps` harness batches for `method_class` and two identical tiny 5-task models (seed 0)."""
    batches = Harness(method_class, steps=steps).batches()
    torch.manual_seed(0)
    ours = TinyMultiTaskModel(NUM_TASKS).train()
    return TwinRun(batches, ours, copy.deepcopy(ours))
