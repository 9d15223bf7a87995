"""A two-conv stand-in for the harness ResNet18, for trainer, contract and resume tests.

Same interface (`mtlbench.model.HarnessModel`), same heads and head kinds, ~1,000 parameters:
a run of the toy bundle takes milliseconds per step instead of the ResNet18's tenths of a second.
Tests of the model itself, of the cost measurement and of the CLI keep the real one.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlbench.config import RunConfig
from mtlbench.conformance import TinyMultiTaskModel


class TinyConvNet(TinyMultiTaskModel):
    """conv(1→8, stride 2) → BN → ReLU → conv(8→16, stride 2) → ReLU → global mean → 16-d features → heads;
    shared, last-shared (the second convolution) and head parameters as the conformance check's model has them."""

    def __init__(self, num_tasks: int, outputs_per_task: int = 1, freeze_trunk: bool = False):
        nn.Module.__init__(self)
        self.num_tasks, self.outputs_per_task = num_tasks, outputs_per_task
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.heads = nn.Linear(16, num_tasks * outputs_per_task)
        if freeze_trunk:
            self.trunk.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (B, 16), logits (B, T) or (B, T, K))."""
        features = self.trunk(images)
        logits = self.heads(features)
        if self.outputs_per_task > 1:
            logits = logits.view(images.shape[0], self.num_tasks, self.outputs_per_task)
        return features, logits


def tiny_model(config: RunConfig, num_tasks: int, device: torch.device) -> TinyConvNet:
    """A `mtlbench.training.ModelFactory` building the tiny model for `config`'s head on `device`."""
    return TinyConvNet(num_tasks, 1 if config.head == "bce" else 2, config.freeze_trunk).to(device)
