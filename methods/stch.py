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

Deviations: the authors subtract max_t (f_t − z_t) (detached) inside the exponent for stability;
torch.logsumexp does the same internally, so the gradient is identical and the objective's
value is not lowered by T·max_t (f_t − z_t). No guard for non-finite losses: as with EW, a
non-finite loss ends the run as diverged.
"""

from __future__ import annotations

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


@register_method("stch")
class STCH(Method):
    """Σ log L for the warm-up epochs (the last one estimates the nadir point), then T·STCH_μ of log(L/n)."""

    description = "STCH (Lin et al., ICML 2024): smooth Tchebycheff of nadir-normalised log-losses after a warm-up."

    def setup(self) -> None:
        self.register_buffer("loss_sum_", torch.zeros(self.num_tasks, dtype=torch.float64))
        self.register_buffer("loss_count_", torch.zeros((), dtype=torch.float64))
        self.register_buffer("nadir_", torch.ones(self.num_tasks, dtype=torch.float64))

    def step(self, ctx: StepContext) -> StepOutput:
        """The warm-up objective Σ log(L + ε) (accumulating the nadir in the last warm-up epoch), then STCH."""
        losses, warmup = ctx.losses, self.params.warmup_epochs
        if ctx.epoch <= warmup:
            if ctx.epoch == warmup:
                self.observe_nadir(losses.detach())
            objective = torch.log(losses + LOG_EPS).sum()
            return StepOutput(weights=1.0 / (losses.detach() + LOG_EPS), objective=objective)
        nadir = self.nadir_.to(losses.dtype)
        mu = self.params.mu
        objective = self.num_tasks * smooth_tchebycheff(normalised_log_losses(losses, nadir), mu)
        return StepOutput(weights=stch_weights(losses.detach(), nadir, mu), objective=objective)

    def observe_nadir(self, losses: torch.Tensor) -> None:
        """Add a batch's losses to the last warm-up epoch's average, the nadir estimate n."""
        self.loss_sum_ += losses.to(self.loss_sum_)
        self.loss_count_ += 1
        self.nadir_.copy_(self.loss_sum_ / self.loss_count_)

    def weights_changed_per_step(self) -> bool:
        """Always: the weights follow each batch's losses."""
        return True
