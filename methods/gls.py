"""GLS, the geometric loss strategy: minimise the geometric mean of the task losses.

Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: Multi-Stream Feature Aggregation and
Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019: the multi-task loss

    L_GLS = (Π_t L_t)^(1/T)

Its gradient puts on each task's loss gradient the factor

    w_t = ∂L_GLS/∂L_t = L_GLS / (T·L_t),

so a task whose loss is small relative to the others gets a larger weight, and equal losses get
equal weights (1/T each when all losses are equal: the gradient is EW's divided by T). These w_t,
detached, are the logged weights; the trainer backpropagates L_GLS itself. They neither sum to T
nor to any fixed total (weight_scale "none").

No hyperparameters. No code of the GLS authors was found; checked against LibMTL's
implementation (by the DB-MTL authors, whose paper reports GLS as a baseline)
(median-research-group/LibMTL @4336804847eaa5e0b924b743d76beec7ac3fdc97, LibMTL/weighting/GLS.py
lines 19-20: `torch.pow(losses.prod(), 1./self.task_num)` backpropagated).

Deviations (numerical, not mathematical):

* L_GLS is computed as exp(mean_t log L_t): the product of 14 losses of order 1e-2 (1e-28)
  approaches float32's smallest normal number (1e-38) and loses precision; the value and the
  gradient are those of (Π L)^(1/T).
* LibMTL logs L_t / (T·Π L) as GLS's weights (GLS.py line 21), which is not the factor its
  objective puts on ∇L_t; the factor L_GLS / (T·L_t) is logged here.

Missing labels: a task without a labelled image in the batch (loss 0, no gradient) is left out, so the
step is GLS on the T' present tasks: L_GLS = (Π_present L_t)^(1/T'), weights L_GLS / (T'·L_t) on them and 0
on the absent ones (with no task present the objective is 1, without gradient).

Like EW there is no guard: a zero loss makes L_GLS zero and its gradient undefined, and a
non-finite loss ends the run as diverged.
"""

from __future__ import annotations

import torch

from mtlbench.methods.base import Method, StepContext, StepOutput
from mtlbench.registry import register_method


def geometric_mean(losses: torch.Tensor) -> torch.Tensor:
    """(Π_t L_t)^(1/T), computed as exp(mean_t log L_t); differentiable."""
    return torch.exp(torch.log(losses).mean())


def gls_weights(losses: torch.Tensor) -> torch.Tensor:
    """∂(Π L)^(1/T) / ∂L_t = (Π L)^(1/T) / (T·L_t), the factor GLS puts on each task's gradient."""
    return geometric_mean(losses) / (losses.numel() * losses)


def present_geometric_mean(losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(Π_present L_t)^(1/T') over the T' present tasks; an absent task's 0 never reaches the log (no NaN
    in the backward). Differentiable, no host sync."""
    logs = torch.log(torch.where(present, losses, torch.ones_like(losses)))
    return torch.exp(logs.sum() / present.sum().clamp(min=1))


def present_gls_weights(losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """∂(Π_present L)^(1/T') / ∂L_t = (Π_present L)^(1/T') / (T'·L_t) for a present task, 0 for an absent one."""
    safe = torch.where(present, losses, torch.ones_like(losses))
    factors = present_geometric_mean(losses, present) / (present.sum().clamp(min=1) * safe)
    return torch.where(present, factors, torch.zeros_like(factors))


@register_method("gls")
class GeometricLossStrategy(Method):
    """Objective (Π_t L_t)^(1/T); weights (Π L)^(1/T) / (T·L_t)."""

    description = "GLS (Chennupati et al., CVPR-W 2019): minimise the geometric mean of the task losses."

    def step(self, ctx: StepContext) -> StepOutput:
        """The objective (Π L)^(1/T) and, detached, its gradient with respect to the losses (over the present
        tasks where labels are missing)."""
        present = ctx.present()
        if present is None:
            return StepOutput(weights=gls_weights(ctx.losses.detach()), objective=geometric_mean(ctx.losses))
        return StepOutput(
            weights=present_gls_weights(ctx.losses.detach(), present),
            objective=present_geometric_mean(ctx.losses, present),
        )

    def weights_changed_per_step(self) -> bool:
        """Always: the weights follow each batch's losses."""
        return True
