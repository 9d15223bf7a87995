"""Random Loss Weighting (RLW): fresh random task weights at every step.

Lin, Ye, Zhang & Tsang, "Reasonable Effectiveness of Random Weighting: A Litmus Test
for Multi-Task Learning", TMLR 2022. At each step sample λ̃ ~ p(λ̃) and normalise it,
λ = softmax(λ̃); the loss is Σ_t λ_t L_t. The paper's (and LibMTL's) default prior is the
standard normal, λ̃ ~ N(0, I); `std` scales it (std = 0 is equal weighting).

Deviation: the weights are multiplied by T, w = T·softmax(λ̃), so that they sum to T like
equal weighting and the other sum-to-T methods of the benchmark (the paper's sum to 1, which
only rescales the gradient by 1/T).

The draws come from the method's own CPU generator (never the data-order RNG) and are copied
to the losses' device asynchronously (through pinned memory on CUDA). The weights do not depend on the losses, so no loss can make them NaN.
"""

from __future__ import annotations


import torch

from mtlbench.methods.base import Method, StepContext, StepOutput
from mtlbench.registry import register_method


def draw_logits(generator: torch.Generator, num_tasks: int, std: float) -> torch.Tensor:
    """One draw λ̃ ~ N(0, std²·I) of length `num_tasks`, on the CPU, float64."""
    return std * torch.randn(num_tasks, generator=generator, dtype=torch.float64)


def rlw_weights(logits: torch.Tensor) -> torch.Tensor:
    """T · softmax(λ̃): positive weights summing to T."""
    return len(logits) * torch.softmax(logits, dim=0)


@register_method("rlw")
class RandomLossWeighting(Method):
    """Weights T·softmax(λ̃), λ̃ ~ N(0, I), drawn afresh at every step."""

    description = "RLW (Lin et al., TMLR 2022): T·softmax(z), z ~ N(0, I) drawn every step."

    def step(self, ctx: StepContext) -> StepOutput:
        """A fresh weight vector; the trainer backpropagates Σ_t w_t L_t."""
        w = rlw_weights(draw_logits(self.generator_, self.num_tasks, float(self.params.std)))
        if ctx.losses.device.type == "cuda":
            w = w.pin_memory()  # an asynchronous copy: the host never waits for the device
        return StepOutput(weights=w.to(device=ctx.losses.device, dtype=ctx.losses.dtype, non_blocking=True))

    def weights_changed_per_step(self) -> bool:
        """Always: a new draw every step."""
        return True
