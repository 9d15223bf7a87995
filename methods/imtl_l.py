"""IMTL-L: the loss-balance part of Impartial Multi-Task Learning.

Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task Learning", ICLR 2021
(its loss balance, IMTL-L). Each task gets a learnable scale s_t, initialised to 0 (training
starts as equal weighting), trained with the model on the scaled loss

    objective = Σ_t ( e^{s_t} L_t − s_t ).

∂/∂s_t = e^{s_t} L_t − 1 vanishes at s_t = −log L_t, where every scaled loss e^{s_t} L_t is 1:
the scales drive the tasks' losses to a common scale. The factor on ∇L_t is e^{s_t}, logged as
the weight (weight_scale "learned"). Up to the sign of s and a factor 2 this is uncertainty
weighting's ½(e^{−s} L + s) (methods/uncertainty.py), with the same weights at the optimum (1/L_t).

Source: median-research-group/LibMTL @4336804847eaa5e0b924b743d76beec7ac3fdc97,
LibMTL/weighting/IMTL.py line 20 (`loss_scale` an nn.Parameter of zeros, trained by the model's
optimizer: LibMTL/trainer.py line 144 optimises `self.model.parameters()`, which hold it) and
line 23 (`self.loss_scale.exp()*losses - self.loss_scale`). IMTL-L alone backpropagates that
scaled loss; LibMTL's IMTL then applies IMTL-G (lines 24-39) to its gradients, which is not part
of this method. No hyperparameters.

Missing labels: a task without a labelled image in the batch is left out of the objective that step, so
its s_t gets no gradient (the scaled-loss balance is among the tasks that have a loss).

Deviation: s trains in the run's optimizer in a group of its own without weight decay (the
harness's rule for a method's parameters, methods/base.py); in LibMTL it shares the model's
group and weight decay.
"""

from __future__ import annotations

import torch

from mtlbench.methods.base import Method, StepContext, StepOutput
from mtlbench.registry import register_method


def imtl_l_objective(losses: torch.Tensor, scales: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_t e^{s_t} L_t − s_t, differentiable in the losses and the scales; over the `present` tasks only
    where given (an absent task's −s_t alone would push s_t up at every step without a label)."""
    terms = torch.exp(scales) * losses - scales
    if present is None:
        return terms.sum()
    return torch.where(present, terms, torch.zeros_like(terms)).sum()


@register_method("imtl-l")
class IMTLL(Method):
    """Learnable scales s_t; objective Σ e^{s_t} L_t − s_t; weights e^{s_t}."""

    description = "IMTL-L (Liu et al., ICLR 2021): learned loss scales, Σ e^s L − s, scaled losses driven to 1."

    def setup(self) -> None:
        self.scale_ = torch.nn.Parameter(torch.zeros(self.num_tasks))  # s, trained by the run's optimizer

    def step(self, ctx: StepContext) -> StepOutput:
        """The scaled-loss objective and the weights e^s in force at this step."""
        scales = self.scale_.to(dtype=ctx.losses.dtype)
        return StepOutput(
            weights=torch.exp(scales.detach()), objective=imtl_l_objective(ctx.losses, scales, ctx.present())
        )
