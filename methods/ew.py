"""Equal weighting: the baseline every other method is compared with."""

from __future__ import annotations

import torch

from mtlbench.methods.base import Method, StepContext, StepOutput
from mtlbench.registry import register_method


@register_method("ew")
class EqualWeighting(Method):
    """Loss Σ_t L_t: every task weighted 1 (weights sum to T)."""

    description = "Equal weighting: minimise the plain sum of the 14 task losses."

    def step(self, ctx: StepContext) -> StepOutput:
        """Weights all 1; the trainer backpropagates Σ_t L_t."""
        return StepOutput(weights=torch.ones_like(ctx.losses.detach()))
