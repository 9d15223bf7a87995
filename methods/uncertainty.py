"""Uncertainty weighting: learned homoscedastic task uncertainty.

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
Geometry and Semantics", CVPR 2018. Each task gets a learnable log-variance s_t = log σ_t²
(initialised to 0, so training starts as equal weighting), optimized with the model.

The paper's likelihoods give, with s = log σ²,

* regression (Gaussian likelihood, −log p = L/(2σ²) + log σ):   ½·exp(−s)·L + ½·s
* classification (softmax of f/σ², −log p ≈ L/σ² + log σ with the paper's approximation
  (1/σ)·Σ_c exp(f_c/σ²) ≈ (Σ_c exp f_c)^(1/σ²)):                exp(−s)·L + ½·s

and common code (LibMTL, the Nash-MTL and FAMO repositories) uses the regression form
½·(exp(−s)·L + s) for every task. Implemented here, for all 14 classification tasks:

    objective = Σ_t exp(−s_t)·L_t + ρ·s_t,   ρ = `regularizer`, default 1

Why ρ = 1: it is the form of the authors' own example code (precision·loss + log-variance),
it equals the common ½(exp(−s)L + s) up to a global factor 2 (same optimum s*_t = log L_t,
same relative weights 1/L_t at the optimum), and the weights start at exp(0) = 1 with the
gradient scale of equal weighting, like every other sum-to-T method of the benchmark.
ρ = ½ gives the paper's classification-likelihood form (optimum s*_t = log 2L_t, weights half
as large): `--param uncertainty.regularizer=0.5` (a cell of its own; `mtlbench list` shows ρ with
this note). ∂objective/∂s_t = −exp(−s_t)·L_t + ρ.

The method returns the objective and, as weights, exp(−s_t) (detached): the factor on ∇L_t.
Guard: a non-finite task loss is left out of the objective for that step (no gradient to the
model or to s_t from it, so s stays finite); such events are counted in `diagnostics()`. A task without a labelled image in the batch (missing
labels) is left out of the objective the same way, uncounted: no labels, no evidence about σ_t, and
s_t gets no gradient that step (the paper's likelihood has no term for an unobserved output).
"""

from __future__ import annotations


import torch

from mtlbench.methods.base import Method, StepContext, StepOutput
from mtlbench.registry import register_method


def uncertainty_objective(
    losses: torch.Tensor, log_var: torch.Tensor, regularizer: float, present: torch.Tensor | None = None
) -> torch.Tensor:
    """Σ_t exp(−s_t)·L_t + ρ·s_t, leaving out (zero gradient) tasks whose loss is not finite, and the tasks
    not `present` (no labelled image: their ρ·s_t alone would pull s_t down at every such step)."""
    finite = torch.isfinite(losses) if present is None else torch.isfinite(losses) & present
    # mask the loss before multiplying: where() alone would backpropagate 0·inf = NaN into s
    safe = torch.where(finite, losses, torch.zeros_like(losses))
    terms = torch.exp(-log_var) * safe + regularizer * log_var
    return torch.where(finite, terms, torch.zeros_like(terms)).sum()


@register_method("uncertainty")
class UncertaintyWeighting(Method):
    """Learnable log-variances s_t; objective Σ exp(−s_t)L_t + ρ·s_t; weights exp(−s_t)."""

    description = "Uncertainty weighting (Kendall et al., CVPR 2018): learned log-variances, Σ exp(−s)L + ρ·s, ρ = 1."

    def setup(self) -> None:
        p = self.params
        self.log_var_ = torch.nn.Parameter(
            torch.full((self.num_tasks,), float(p.init_log_var))
        )  # the run's optimizer trains it
        self.register_buffer("skipped_", torch.zeros((), dtype=torch.long))

    def step(self, ctx: StepContext) -> StepOutput:
        """The objective Σ exp(−s)L + ρ·s and the weights exp(−s) in force at this step."""
        self.skipped_ = self.skipped_ + (~torch.isfinite(ctx.losses.detach())).sum()
        log_var = self.log_var_.to(dtype=ctx.losses.dtype)
        objective = uncertainty_objective(ctx.losses, log_var, self.params.regularizer, ctx.present())
        weights = torch.exp(-log_var.detach())
        return StepOutput(weights=weights, objective=objective)

    def diagnostics(self) -> dict[str, float]:
        """How many task losses were left out of the objective because they were not finite."""
        return {"nonfinite_task_losses_skipped": float(self.skipped_.item())}
