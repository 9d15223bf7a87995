"""DB-MTL: dual balancing, log-transformed losses and max-norm-balanced task gradients.

Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Tsang & Kwok, "Dual-Balancing for Multi-Task Learning", 2023
(arXiv 2308.12029). At step k (from 1), with g_t the gradient of task t's loss with respect to
the shared parameters:

* loss balance: each task contributes the gradient of log(L_t + ε), ε = 1e-8, which is
  g_t / (L_t + ε) (no extra backward: the per-task gradients of L_t are rescaled);
* an exponential moving average of those gradients,
  ĝ_t ← β_k ĝ_t + (1 − β_k) ∇log(L_t + ε), β_k = β / k^σ, ĝ starting at 0;
* gradient balance: every ĝ_t is scaled to the largest EMA norm,
  α_t = max_i ‖ĝ_i‖ / (‖ĝ_t‖ + ε), and the shared update is Σ_t α_t ĝ_t.

So after balancing each task's gradient α_t ĝ_t has the norm max_i ‖ĝ_i‖ (to ε).

Source: median-research-group/LibMTL @4336804847eaa5e0b924b743d76beec7ac3fdc97 (the authors'
library), LibMTL/weighting/DB_MTL.py: line 16 (the EMA buffer starts at 0, one row per task over
the shared parameters), line 28 (gradients of log(losses + 1e-8) with respect to the shared
parameters), line 30 (the EMA with β/step^σ), lines 32-35 (α and Σ α ĝ). Defaults β = 0.9 and
σ = 0: LibMTL/config.py lines 63-64 (the same in Xi-L/STCH's copy of LibMTL).

Logged weights: α_t, the factors on the tasks' EMA gradients ĝ_t (of log-losses). They are ≥ 1,
the largest-norm task's is 1, and they have no fixed total (weight_scale "none"). The EMA (T, P)
is a registered buffer, created at the first step in the Jacobian's dtype and device; the step
counter k is a plain int (extra state), so the step makes no host sync.

Deviations:

* task heads: the harness gives each head the gradient of its own loss L_t (methods/base.py);
  in LibMTL the per-task backward passes leave each head the gradient of log(L_t + 1e-8).
* missing labels: a task without a labelled image in the batch has no loss to take the log of; it is
  left out of the step (α_t = 0, the largest norm taken over the present tasks: the T'-task problem) and
  its EMA row is kept as it was, not decayed toward its zero gradient.
* guard: a task whose gradient row or loss is not finite this step keeps its EMA row unchanged
  (LibMTL has no guard), counted in `diagnostics()`.
"""

from __future__ import annotations

import torch

from mtlbench.methods.base import StepContext, StepOutput
from mtlbench.methods.jacobian_state import JacobianStateMethod
from mtlbench.registry import register_method

EPS = 1e-8  # the authors' ε, in log(L + ε) and in α's denominator


def ema_factor(beta: float, sigma: float, k: int) -> float:
    """β_k = β / k^σ, the weight of the old EMA at step k (from 1)."""
    return beta / k**sigma


def max_norm_factors(ema: torch.Tensor) -> torch.Tensor:
    """α_t = max_i ‖ĝ_i‖ / (‖ĝ_t‖ + ε) for the EMA rows ĝ_t."""
    norms = torch.linalg.vector_norm(ema, dim=1)
    return norms.max() / (norms + EPS)


@register_method("db-mtl")
class DBMTL(JacobianStateMethod):
    """DB-MTL on the shared parameters' gradients: EMA of ∇log L, each scaled to the largest EMA norm."""

    description = "DB-MTL (Lin et al. 2023): log-losses; EMA task gradients scaled to the largest norm, summed."
    jacobian_buffers = ("ema_",)

    def setup(self) -> None:
        self.steps_ = 0  # k of the last step
        self.register_buffer("skipped_rows_", torch.zeros((), dtype=torch.long))

    def step(self, ctx: StepContext) -> StepOutput:
        """Update the EMA with ∇log(L + ε), return the weights α and the shared gradient Σ α ĝ."""
        if ctx.grads is None:
            raise ValueError("DB-MTL needs the shared parameters' per-task gradients in ctx.grads")
        grads = ctx.grads
        ema = self.jacobian_buffer("ema_", grads)
        self.steps_ += 1
        new_weight = 1.0 - ema_factor(self.params.beta, self.params.beta_sigma, self.steps_)
        losses = ctx.losses.detach().to(grads.dtype)
        ok = torch.isfinite(losses) & torch.isfinite(torch.linalg.vector_norm(grads, dim=1))
        present = ctx.present()
        if present is not None:
            out = self.present_step(ema, grads, losses, ok, present.to(grads.device), new_weight)
            return StepOutput(weights=out.weights.to(ctx.losses.dtype), shared_grad=out.shared_grad)
        self.skipped_rows_ += (~ok).sum()
        scale = torch.where(ok, 1.0 / (losses + EPS), torch.zeros_like(losses))
        log_grads = (grads * scale[:, None]).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)  # bad rows → 0
        ema.lerp_(log_grads, (ok.to(grads.dtype) * new_weight)[:, None])  # bad rows keep their EMA
        alpha = max_norm_factors(ema)
        return StepOutput(weights=alpha.to(ctx.losses.dtype), shared_grad=alpha @ ema)

    def present_step(
        self,
        ema: torch.Tensor,
        grads: torch.Tensor,
        losses: torch.Tensor,
        ok: torch.Tensor,
        present: torch.Tensor,
        new_weight: float,
    ) -> StepOutput:
        """The step with missing labels: the EMA of the present tasks moves, α over them, absent tasks α = 0."""
        self.skipped_rows_ += (present & ~ok).sum()
        moves = ok & present
        scale = torch.where(moves, 1.0 / (losses + EPS), torch.zeros_like(losses))
        log_grads = (grads * scale[:, None]).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        ema.lerp_(log_grads, (moves.to(grads.dtype) * new_weight)[:, None])  # absent and bad rows keep their EMA
        norms = torch.linalg.vector_norm(ema, dim=1)
        largest = torch.where(present, norms, torch.zeros_like(norms)).max()
        alpha = torch.where(present, largest / (norms + EPS), torch.zeros_like(norms))
        return StepOutput(weights=alpha, shared_grad=alpha @ ema)

    def weights_changed_per_step(self) -> bool:
        """Always: the EMA moves every step."""
        return True

    def diagnostics(self) -> dict[str, float]:
        """Task gradient rows left out of the EMA because they (or the loss) were not finite."""
        return {"nonfinite_task_rows_skipped": float(self.skipped_rows_.item())}
