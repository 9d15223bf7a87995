"""STCH: smooth Tchebycheff scalarization of the (log, nadir-normalised) task losses.

Lin et al., "Smooth Tchebycheff Scalarization for Multi-Objective
Optimization", ICML 2024. The paper smooths the Tchebycheff scalarization max_t λ_t (f_t − z_t)
with smoothing μ > 0:

    g_μ(x) = μ · log Σ_t exp( λ_t (f_t(x) − z_t) / μ ),

which tends to max_t λ_t (f_t − z_t) as μ → 0 and, for large μ, to μ·log T + mean_t λ_t (f_t − z_t).

As in the authors' multi-task code (Xi-L/STCH @a510c1e635a8db2697e2cc3671ec40fbe383d28e,
STCH_MTL/LibMTL/weighting/STCH.py, lines 29-50), with W warm-up epochs and epochs counted from 0
(as their trainer counts them, STCH_MTL/LibMTL/trainer.py lines 213-214, and as StepContext.epoch):

* epochs e < W: the objective is Σ_t log(L_t + 1e-20) (lines 29-32);
* epoch e = W: the same objective, and the batch losses are averaged over the epoch into the
  nadir estimate n_t (lines 33-39);
* epochs e > W: f_t − z_t = log(L_t / n_t + 1e-20), λ_t = 1, and the objective is
  T · μ · log Σ_t exp((f_t − z_t) / μ) (lines 40-50): the log-losses with the nadir point as
  the reference; the factor T is the authors'.

Defaults μ = 1 and W = 4: STCH_MTL/LibMTL/config.py lines 66-67 (the same in LibMTL's own STCH,
median-research-group/LibMTL @4336804847eaa5e0b924b743d76beec7ac3fdc97, LibMTL/config.py lines 66-67).
With W = 4 a run needs at least 6 epochs to reach the STCH phase: the smoke and quick presets
(2 and 3 epochs) train with Σ log L only.

The logged weights are the objective's gradient with respect to the losses:
1/(L_t + 1e-20) during the warm-up, T·softmax((f − z)/μ)_t / (L_t + 1e-20·n_t) after it;
they follow each batch (weight_scale "none"). The running sum, count and nadir estimate are
float64 buffers on the losses' device; the phase comes from the step's epoch, so the step never
reads a tensor on the host.

Missing labels: a task without a labelled image in the batch (loss 0, no gradient) is left out, and
the step is the method's on the T' present tasks: Σ_present log(L_t + 1e-20) during the warm-up, then
T'·μ·log Σ_present exp((f_t − z_t)/μ); an absent task's weight is 0. The nadir estimate n_t averages
task t's losses over the batches of the last warm-up epoch that have a label for it (a task without any
keeps n_t = 1); the count is per task (a (T,) buffer: one per task, the same count for every task without
missing labels, so n is computed as before).

Deviations: the authors subtract max_t (f_t − z_t) (detached) inside the exponent for stability;
torch.logsumexp does the same internally, so the gradient is identical and the objective's
value is not lowered by T·max_t (f_t − z_t). No guard for non-finite losses: as with EW, a
non-finite loss ends the run as diverged.
"""

from __future__ import annotations

import math

from typing import Any

import torch

from mtlbench.methods.base import Method, StepContext, StepOutput
from mtlbench.registry import register_method

LOG_EPS = 1e-20  # the authors' constant inside every log


def smooth_tchebycheff(values: torch.Tensor, mu: float) -> torch.Tensor:
    """μ · log Σ_t exp(values_t / μ), differentiable; values are the shifted objectives f_t − z_t."""
    return mu * torch.logsumexp(values / mu, dim=0)


def normalised_log_losses(losses: torch.Tensor, nadir: torch.Tensor) -> torch.Tensor:
    """f_t − z_t = log(L_t / n_t + 1e-20)."""
    return torch.log(losses / nadir + LOG_EPS)


def stch_weights(losses: torch.Tensor, nadir: torch.Tensor, mu: float) -> torch.Tensor:
    """∂[T·μ·log Σ exp(log(L/n + ε)/μ)] / ∂L_t = T·softmax(·/μ)_t / (L_t + ε·n_t)."""
    shifted = normalised_log_losses(losses, nadir)
    return losses.numel() * torch.softmax(shifted / mu, dim=0) / (losses + LOG_EPS * nadir)


def present_log_values(losses: torch.Tensor, nadir: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """f_t − z_t for the present tasks, −inf for the absent ones (out of every log-sum-exp and softmax)."""
    safe = torch.where(present, losses, nadir)  # an absent task's 0 never reaches the log
    values = normalised_log_losses(safe, nadir)
    return torch.where(present, values, torch.full_like(values, -math.inf))


@register_method("stch")
class STCH(Method):
    """Σ log L for the warm-up epochs (the last one estimates the nadir point), then T·STCH_μ of log(L/n)."""

    description = "STCH (Lin et al., ICML 2024): smooth Tchebycheff of nadir-normalised log-losses after a warm-up."

    def setup(self) -> None:
        self.register_buffer("loss_sum_", torch.zeros(self.num_tasks, dtype=torch.float64))
        self.register_buffer("loss_count_", torch.zeros(self.num_tasks, dtype=torch.float64))  # batches, per task
        self.register_buffer("nadir_", torch.ones(self.num_tasks, dtype=torch.float64))

    def step(self, ctx: StepContext) -> StepOutput:
        """The warm-up objective Σ log(L + ε) (accumulating the nadir in the last warm-up epoch), then STCH."""
        losses, warmup = ctx.losses, self.params.warmup_epochs
        present = ctx.present()
        if present is not None:
            return self.present_step(ctx, present)
        if ctx.epoch <= warmup:
            if ctx.epoch == warmup:
                self.observe_nadir(losses.detach())
            objective = torch.log(losses + LOG_EPS).sum()
            return StepOutput(weights=1.0 / (losses.detach() + LOG_EPS), objective=objective)
        nadir = self.nadir_.to(losses.dtype)
        mu = self.params.mu
        objective = self.num_tasks * smooth_tchebycheff(normalised_log_losses(losses, nadir), mu)
        return StepOutput(weights=stch_weights(losses.detach(), nadir, mu), objective=objective)

    def present_step(self, ctx: StepContext, present: torch.Tensor) -> StepOutput:
        """The step on the present tasks only (missing labels): see the module's docstring."""
        losses, zeros = ctx.losses, torch.zeros_like(ctx.losses)
        if ctx.epoch <= self.params.warmup_epochs:
            if ctx.epoch == self.params.warmup_epochs:
                self.observe_nadir(losses.detach(), present)
            safe = torch.where(present, losses, torch.ones_like(losses))
            objective = torch.where(present, torch.log(safe + LOG_EPS), zeros).sum()
            return StepOutput(weights=torch.where(present, 1.0 / (safe.detach() + LOG_EPS), zeros), objective=objective)
        nadir, mu = self.nadir_.to(losses.dtype), self.params.mu
        values = present_log_values(losses, nadir, present)
        count = present.sum().to(losses.dtype)
        objective = count * smooth_tchebycheff(values, mu)
        objective = torch.where(present.any(), objective, zeros.sum())  # no task present: 0, no gradient
        detached = values.detach()
        share = torch.softmax(detached / mu, dim=0)  # 0 for an absent task
        safe = torch.where(present, losses.detach(), nadir)
        weights = torch.where(present, count * share / (safe + LOG_EPS * nadir), zeros)
        return StepOutput(weights=weights, objective=objective)

    def observe_nadir(self, losses: torch.Tensor, present: torch.Tensor | None = None) -> None:
        """Add a batch's losses to the last warm-up epoch's average, the nadir estimate n (per task over the
        batches where it is `present`, where labels are missing)."""
        if present is None:
            self.loss_sum_ += losses.to(self.loss_sum_)
            self.loss_count_ += 1
            self.nadir_.copy_(self.loss_sum_ / self.loss_count_)
            return
        present = present.to(self.loss_count_.device)
        self.loss_sum_ += torch.where(present, losses.to(self.loss_sum_), torch.zeros_like(self.loss_sum_))
        self.loss_count_ += present.to(self.loss_count_)
        seen = self.loss_count_ > 0
        self.nadir_.copy_(torch.where(seen, self.loss_sum_ / self.loss_count_.clamp(min=1), self.nadir_))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        count = state_dict.get(prefix + "loss_count_")
        if count is not None and count.dim() == 0:  # a checkpoint from before the count was per task
            state_dict[prefix + "loss_count_"] = count.expand(self.num_tasks).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def weights_changed_per_step(self) -> bool:
        """Always: the weights follow each batch's losses."""
        return True
