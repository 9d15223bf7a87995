"""What the DeepChest authors' GradNorm baseline computed: not GradNorm (that is `gradnorm`, Chen et al. 2018).

The DeepChest paper (Mohamed et al., 2025) compares against a baseline it calls GradNorm. Its code,
youssefkhalil320/DeepChest-MTL@0c45bdd1b24101cd4b333b591a69fdc5853e0929, GradNorm_MTL/trainers/
mtl_grad_norm_trainer.py (MTLTrainerWithGradNorm, run by GradNorm_MTL/train.py), computes per training
step, with w_t the task weights (1.0 at the start, line 18, never reset) and C_t the number of correct
training predictions of task t in the epoch so far, this batch's included (`task_correct`: reset at each
epoch's start, line 86, incremented before the update, line 109; a count, not a rate):

    ‖g_t‖ = ‖∇_θ (w_t L_t)‖ = w_t ‖∇_θ L_t‖         compute_gradient_norms, lines 20–36
    target_t = mean_j ‖g_j‖ · C_t^α                  compute_target_gradient_norms, lines 39–48
    w_t ← max(w_t − α (‖g_t‖ − target_t), 1e-6)      update_task_weights, lines 66–70; α = 0.12

and the model trains on Σ_t w_t L_t with the weights from before the update: the losses were built with
them (line 100), and `gradient_loss.backward()` (line 64) differentiates tensors made from Python floats,
which reaches no parameter (the `zero_grad` before it clears the norms' backward passes). There is no
learnable weight, no loss ratio L_t / L_t(0) and no renormalisation; one α is the exponent and the step.

A consequence of the rule, not of this code: Σ_t (‖g_t‖ − target_t) = T · mean‖g‖ · (1 − mean_t C_t^α),
negative once mean_t C_t^α > 1 (a few correct predictions per task), so the weights' sum grows at nearly
every step, by at least α · T · mean‖g‖ · (mean_t C_t^α − 1), and ‖g_t‖ grows with w_t: the weights act as a
growing loss scale, which an adaptive optimizer (theirs: Adam, lr 1e-3, train.py line 89) largely divides out.
Weights large enough to make the loss non-finite end the run here as diverged (the trainer's check); their
loop has no such check.

Deviation: ‖∇_θ L_t‖ in their code is over every parameter with a gradient, the trunk and task t's head.
The harness gives per-task gradients of the trunk only (the "shared_params" space, the closest), so the
head's share ‖∇_head_t L_t‖² of ‖∇_θ L_t‖² = ‖∇_trunk L_t‖² + ‖∇_head_t L_t‖² is left out of the norm. That
share is not small: 20–82% for 4 tasks of the harness ResNet18 at random initialisation on one random 64 px
batch of 16 (a spot check, not a measurement on data).

Their counts use the argmax of two logits (line 104): `ctx.correct` is that with `--head ce2`, and
P(present) > 0.5 with one logit. Not the method but their protocol: ResNet50, ImageNet weights and a
shared Linear(2048, 512) + ReLU before the heads (models/xray_resnet.py), 2-class cross-entropy heads,
Adam lr 1e-3, batch 128, 128 px, 15 epochs (GradNorm_MTL/README.md's command).

Missing labels (their data has none): a task without a labelled image in the batch has no gradient, so
‖g_t‖ = 0 would raise its weight by α·mean‖g‖·C_t^α at every such step; instead it keeps its weight, and the
mean of the targets is over the present tasks. C_t counts correct predictions among labelled images only.

Cost: one backward pass per task through the trunk, as theirs (the space's per-task gradients). No host
sync: their `.item()` reads are the only thing left out; the values are the same.
"""

from __future__ import annotations

import torch

from mtlbench.methods.base import Method, StepContext, StepOutput
from mtlbench.registry import register_method


def authors_update(
    weights: torch.Tensor,
    grad_norms: torch.Tensor,
    counts: torch.Tensor,
    alpha: float,
    floor: float,
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """w_t ← max(w_t − α(‖g_t‖ − mean_j ‖g_j‖ · C_t^α), floor): their update_task_weights, with the targets of
    compute_target_gradient_norms, from the weighted losses' gradient norms ‖g_t‖ and the correct counts C_t.
    With `present` (missing labels) the mean is over the present tasks and an absent task keeps its weight."""
    if present is None:
        targets = grad_norms.mean() * counts.pow(alpha)
        return (weights - alpha * (grad_norms - targets)).clamp(min=floor)
    mean = torch.where(present, grad_norms, torch.zeros_like(grad_norms)).sum() / present.sum().clamp(min=1)
    updated = (weights - alpha * (grad_norms - mean * counts.pow(alpha))).clamp(min=floor)
    return torch.where(present, updated, weights)


@register_method("gradnorm-authors")
class GradNormAuthors(Method):
    """The DeepChest authors' "GradNorm": weights stepped on the gap to counts-scaled gradient-norm targets."""

    description = (
        "What the DeepChest authors' GradNorm baseline computed (not GradNorm): each step w_t ← max(w_t − "
        "α(‖∇(w_t L_t)‖ − mean_j ‖∇(w_j L_j)‖·C_t^α), 1e-6), C_t task t's correct count in the epoch so far."
    )

    def setup(self) -> None:
        p = self.params
        self.register_buffer("weights_", torch.full((self.num_tasks,), float(p.initial_weight), dtype=torch.float64))
        self.register_buffer("correct_", torch.zeros(self.num_tasks, dtype=torch.float64))  # C_t, this epoch
        self.epoch_ = -1  # the epoch C_t counts

    def step(self, ctx: StepContext) -> StepOutput:
        """Return the current weights for Σ w_t L_t, then update them on this batch's norms and counts."""
        if ctx.grads is None or ctx.correct is None:
            raise ValueError(
                "gradnorm-authors needs the per-task gradients (ctx.grads) and correct counts (ctx.correct)"
            )
        if ctx.epoch != self.epoch_:
            self.correct_.zero_()
            self.epoch_ = ctx.epoch
        self.correct_ += ctx.correct.to(self.correct_)
        used = self.weights_.clone()
        grad_norms = self.weights_ * ctx.grads.norm(dim=1).to(self.weights_)  # ‖∇(w_t L_t)‖, w_t > 0
        p = self.params
        present = ctx.present()
        present = None if present is None else present.to(self.weights_.device)
        self.weights_.copy_(authors_update(self.weights_, grad_norms, self.correct_, p.alpha, p.min_weight, present))
        return StepOutput(weights=used.to(device=ctx.losses.device, dtype=ctx.losses.dtype))

    def weights_changed_per_step(self) -> bool:
        """Its weights change every step."""
        return True
