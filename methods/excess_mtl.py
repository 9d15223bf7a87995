"""ExcessMTL: task weights moved multiplicatively by each task's estimated excess risk.

He et al., "Robust Multi-Task Learning with Excess Risks", ICML 2024. The excess risk of
task t, L_t(θ) − L_t(θ_t*), is estimated by a second-order Taylor expansion, ½ g_tᵀ H_t⁻¹ g_t,
with the Hessian replaced by a diagonal AdaGrad-style approximation built from the squared
gradients seen so far (the code drops the ½, which the ratio r cancels). With g_t the gradient
of L_t with respect to the shared parameters at step k:

    S_t ← S_t + g_t ⊙ g_t                           (accumulated over all steps)
    e_t = Σ_p g_{t,p}² / sqrt(S_{t,p} + 1e-7)        (the excess-risk estimate)
    r_t = e_t / e_t⁽¹⁾                              (e⁽¹⁾: the first step's estimates)
    w_t ← w_t · exp(η r_t),  then w ← T · w / Σ_i w_i

and the model trains on Σ_t w_t L_t with the weights just updated. At the first step e⁽¹⁾ is
recorded and w stays 1. Weights start at 1 and sum to T (weight_scale "sum-to-T").

Source: yifei-he/ExcessMTL @b179956021c9ac26f93f986a35d034ffea38f790 (the authors' code),
LibMTL/LibMTL/weighting/ExcessMTL.py: line 10 (w starts at 1), line 16 (`autograd` gradients of
each loss with respect to the shared parameters), lines 29-33 (S, e), lines 35-43 (the baseline
from the first step, the exponentiated update, the renormalisation to T), lines 46-47
(backpropagate Σ w L, so each head gets w_t ∇L_t as here). Default η = 1e-2:
LibMTL/LibMTL/config.py line 69 (`--robust_step_size`); their README's Office-Home command uses 1.
LibMTL's copy (median-research-group/LibMTL @4336804847eaa5e0b924b743d76beec7ac3fdc97,
LibMTL/weighting/ExcessMTL.py lines 30-48, config.py line 69) is the same.

State: S (T, P) and e⁽¹⁾ and w are registered buffers (S created at the first step in the
Jacobian's dtype and device); whether e⁽¹⁾ is set is a plain bool (extra state). No host sync.

Deviations (none of them changes a finite, non-degenerate step):

* the update is computed as w ← T·softmax(log w + η r) — the same numbers as the product and
  renormalisation, without overflowing exp for a large η r;
* missing labels: a task without a labelled image in the batch (no gradient) adds nothing to S, its
  baseline e⁽¹⁾ is taken at its first step with a label (where it has r_t = 1), and it keeps its weight:
  the multiplicative update and the renormalisation are among the present tasks, to the total they hold
  (so the weights still sum to T). The first step of a run records the baselines and updates nothing.
* guard: a task whose gradient row is not finite this step adds nothing to S and gets r_t = 0
  (its weight is only renormalised), and so does a task whose baseline e⁽¹⁾ is 0 (r_t would be
  infinite); such rows are counted in `diagnostics()`. The authors' code has no guard.

torchjd's ExcessMTL aggregator (torchjd 0.18) computes the same update with three convention
differences: its weights lie on the simplex (T times smaller), it divides by e⁽¹⁾ + 1e-7, and
with n_warmup_steps = 0 it already updates the weights at the first step with the raw e_t (the
authors' code does not update there); with n_warmup_steps = 1 its steps equal these
(tests/test_method_excess_mtl.py).
"""

from __future__ import annotations

import math

import torch

from mtlbench.methods.base import StepContext, StepOutput
from mtlbench.methods.jacobian_state import JacobianStateMethod
from mtlbench.registry import register_method

HESSIAN_EPS = 1e-7  # the authors' constant under the square root


def excess_risks(sq_grads: torch.Tensor, sq_grad_sum: torch.Tensor) -> torch.Tensor:
    """e_t = Σ_p g_{t,p}² / sqrt(S_{t,p} + 1e-7), with S already including this step's g²."""
    inv_sqrt = sq_grad_sum.add(HESSIAN_EPS).rsqrt_()
    return inv_sqrt.mul_(sq_grads).sum(dim=1)


def multiplicative_update(weights: torch.Tensor, ratios: torch.Tensor, step_size: float) -> torch.Tensor:
    """T · w ⊙ exp(η r) / Σ_i w_i exp(η r_i), computed in log space."""
    return weights.numel() * torch.softmax(torch.log(weights) + step_size * ratios, dim=0)


@register_method("excess-mtl")
class ExcessMTL(JacobianStateMethod):
    """ExcessMTL on the shared parameters' gradients: w ← T-normalised w·exp(η·e/e⁽¹⁾); loss Σ w L."""

    description = "ExcessMTL (He et al., ICML 2024): weights grow with estimated excess risk, w·exp(η·e/e0)."
    jacobian_buffers = ("sq_grad_sum_",)

    def setup(self) -> None:
        self.register_buffer("weights_", torch.ones(self.num_tasks, dtype=torch.float64))
        self.register_buffer("initial_risks_", torch.zeros(self.num_tasks, dtype=torch.float64))
        self.register_buffer("skipped_rows_", torch.zeros((), dtype=torch.long))
        self.has_initial_ = False

    def step(self, ctx: StepContext) -> StepOutput:
        """Accumulate g², estimate the excess risks, update the weights (from the second step); weights for Σ w L."""
        if ctx.grads is None:
            raise ValueError("ExcessMTL needs the shared parameters' per-task gradients in ctx.grads")
        sq_sum = self.jacobian_buffer("sq_grad_sum_", ctx.grads)
        sq = ctx.grads.square()
        ok = torch.isfinite(sq.sum(dim=1))
        sq.nan_to_num_(nan=0.0, posinf=0.0).mul_(ok[:, None])  # a bad row adds nothing
        sq_sum.add_(sq)
        risks = excess_risks(sq, sq_sum).double()
        present = ctx.present()
        if present is not None:
            self.present_update(risks, ok, present.to(risks.device))
        elif not self.has_initial_:
            self.initial_risks_.copy_(risks)
            self.has_initial_ = True
            self.skipped_rows_ += (~ok).sum()
        else:
            usable = ok & (self.initial_risks_ > 0)
            self.skipped_rows_ += (~usable).sum()
            ratios = torch.where(usable, risks / self.initial_risks_, torch.zeros_like(risks))
            self.weights_.copy_(multiplicative_update(self.weights_, ratios, self.params.robust_step_size))
        # a copy: the trainer keeps each step's weights until the epoch ends, and the buffer changes in place
        return StepOutput(weights=self.weights_.to(ctx.losses.dtype, copy=True))

    def present_update(self, risks: torch.Tensor, ok: torch.Tensor, present: torch.Tensor) -> None:
        """Baselines at each task's first labelled step; the update among the present tasks (missing labels)."""
        ok = ok.to(present.device) & present
        first = ok & (self.initial_risks_ == 0)  # no baseline yet (or a zero one, retaken)
        self.initial_risks_.copy_(torch.where(first, risks, self.initial_risks_))
        if not self.has_initial_:
            self.has_initial_ = True
            self.skipped_rows_ += (present & ~ok).sum()
            return
        usable = ok & (self.initial_risks_ > 0)
        self.skipped_rows_ += (present & ~usable).sum()
        ratios = torch.where(usable, risks / self.initial_risks_, torch.zeros_like(risks))
        w = self.weights_
        total = torch.where(present, w, torch.zeros_like(w)).sum()
        logits = torch.where(
            present, torch.log(w) + self.params.robust_step_size * ratios, torch.full_like(w, -math.inf)
        )
        updated = total * torch.softmax(logits, dim=0)  # NaN only where no task is present: not taken
        self.weights_.copy_(torch.where(present, updated, w))

    def weights_changed_per_step(self) -> bool:
        """Always: the weights move every step after the first."""
        return True

    def diagnostics(self) -> dict[str, float]:
        """Task rows left out of a step (non-finite gradient, or a zero first-step excess risk)."""
        return {"skipped_task_rows": float(self.skipped_rows_.item())}
