"""Nash-MTL: the task weights of the Nash bargaining solution over the update direction.

Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022. The update Δθ = Σ_t α_t g_t
is the Nash bargaining solution of the tasks' utilities g_tᵀΔθ within a ball; the paper's
Claim 3.1 (gradients linearly independent) characterizes it by α ∈ R^T_+ with

    G α = 1/α   (elementwise: α_t (Gα)_t = 1),   G = J Jᵀ,

whose solution has ‖Σ_t α_t g_t‖² = αᵀGα = Σ_t α_t (Gα)_t = T.

Solver (`nash_bargaining_weights`): G α = 1/α is the stationarity condition of

    f(α) = ½ αᵀGα − Σ_t log α_t,   α > 0,

which is strictly convex (−Σ log α is) and self-concordant, so its minimizer is the unique
solution, and damped Newton (Nesterov's step 1/(1 + λ), λ the Newton decrement; a full step once
λ < 1/4) stays in α > 0, converges from any start and quadratically near the solution. Each
iteration is one T×T solve with the Hessian G + diag(1/α²), float64 on the CPU: ~10 iterations,
well under a millisecond for T = 14, with no dependency beyond numpy. It starts from the best
multiple of α_t ∝ 1/‖g_t‖ (exact for orthogonal and for identical gradients) and stops when
max_t |α_t (Gα)_t − 1| ≤ 1e-10, i.e. at the paper's condition itself. The authors instead run up
to `optim_niter` = 20 sequential convex approximations (the concave part of the log-barrier
linearized, each solved by cvxpy+ECOS, stopping when α moves less than 1e-6), warm-started
from the previous step's α: the same fixed point, reached only approximately; cvxpy is not a
dependency here, so there is no `optim_niter` (our solve always runs to the condition above).
f is unbounded below, and no solution exists, when a non-negative combination of the gradients
is 0 (a Pareto-stationary point). When Newton does not reach the condition in 100 iterations, or
α grows so that max_t α_t‖g_t‖ > 1e4·√T (the float32 combination Σα_t g_t would then be mostly
cancellation), the step is "solver_failed_steps" and reuses the previous α, as the authors' code
keeps its previous α when ECOS fails (α starts at 1, as theirs).

Update bound, as in the authors' `backward`: the shared part's gradient is clipped to norm
`max_norm` (torch.nn.utils.clip_grad_norm_), i.e. the weights are α·min(1, max_norm/‖Σα_t g_t‖),
the norm from the Gramian (‖Σα_t g_t‖² = αᵀGα; torch's +1e-6 in the denominator is left out).
At the solution the norm is √T, so with the default max_norm 1 and T = 14 every solved step is
scaled to norm 1 (weights α/√14). `update_weights_every` k solves for α every k-th step and
reuses it in between, as the authors do.

Defaults, from AvivNavon/nash-mtl@cce18403ef5557a6b30f4ba43b896117107d6902: max_norm 1.0
(methods/weight_methods.py line 104), update_weights_every 1 (experiments/utils.py lines 55–60;
the class default, line 105, too); their optim_niter 20 (experiments/utils.py line 53) has no
counterpart. The solve: weight_methods.py lines 123–188 (stopping rule, CCP, constraint
α_t (Gα)_t ≥ 1 and objective), normalization of G by its Frobenius norm lines 231–235 (α is for
the unnormalized G, as here), clipping lines 268–270.

Scale: α is the bargaining solution itself, then clipped: weights neither sum to T nor to 1
(weight_scale "none").

Deviations from the authors' code: the solver (above: converged each step rather than ≤ 20
warm-started CCP iterations); task heads receive their own losses' gradients (the harness
contract) where the authors backpropagate Σ α_t L_t into the heads too (unclipped).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mtlbench.methods.base import StepContext, StepOutput
from mtlbench.methods.gramian import GramianMethod
from mtlbench.registry import register_method

NEWTON_MAX_ITER = 100
RESIDUAL_TOL = 1e-10  # max_t |α_t (Gα)_t − 1| at the solution
MAX_CANCELLATION = 1e4  # max_t α_t‖g_t‖ / ‖Σα_t g_t‖ beyond which the problem counts as unbounded
FULL_STEP_DECREMENT = 0.25  # Newton decrement below which the full Newton step is taken


def nash_bargaining_weights(gram: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """α > 0 (k,) with G α = 1/α, and whether it was reached (False: no solution found; α is the last iterate)."""
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    k = g.shape[0]
    scale = max(float(np.diag(g).max()), np.finfo(float).tiny)
    g = g / scale  # then α·√scale solves the scaled problem
    norms = np.sqrt(np.clip(np.diag(g), np.finfo(float).tiny, None))
    direction = 1.0 / norms
    curvature = float(direction @ g @ direction)
    if not curvature > 0.0:  # Σ_t g_t/‖g_t‖ = 0: a positive combination vanishes, f is unbounded
        return torch.from_numpy(direction / math.sqrt(scale)), False
    alpha = direction * math.sqrt(k / curvature)  # argmin of f on the ray
    for _ in range(NEWTON_MAX_ITER):
        g_alpha = g @ alpha
        if float(np.max(np.abs(alpha * g_alpha - 1.0))) <= RESIDUAL_TOL:
            return torch.from_numpy(alpha / math.sqrt(scale)), True
        gradient = g_alpha - 1.0 / alpha
        newton = np.linalg.solve(g + np.diag(1.0 / alpha**2), -gradient)
        decrement = math.sqrt(max(float(-gradient @ newton), 0.0))
        alpha = alpha + (1.0 if decrement < FULL_STEP_DECREMENT else 1.0 / (1.0 + decrement)) * newton
        if not np.all(np.isfinite(alpha)) or float(np.max(alpha * norms)) > MAX_CANCELLATION * math.sqrt(k):
            break
    return torch.from_numpy(alpha / math.sqrt(scale)), False


def clip_factor(gram: torch.Tensor, alpha: torch.Tensor, max_norm: float) -> float:
    """min(1, max_norm / ‖Σ_t α_t g_t‖) (1 when max_norm is 0: no bound)."""
    norm = math.sqrt(max(float(alpha @ gram @ alpha), 0.0))
    return max_norm / norm if 0 < max_norm < norm else 1.0


@register_method("nash-mtl")
class NashMTL(GramianMethod):
    """Nash-MTL on the shared parameters' gradients; weights α clipped to ‖Σα_t g_t‖ ≤ max_norm."""

    description = "Nash-MTL (Navon et al. 2022): Nash bargaining weights, G α = 1/α; update norm ≤ max_norm."
    event_names = ("solver_failed_steps",)

    def setup(self) -> None:
        self.register_buffer("alpha", torch.ones(self.num_tasks, dtype=torch.float64))  # the last α solved for
        self.steps_ = 0
        self.rows: list[int] = []  # the usable tasks of the current step

    def usable_tasks(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """The screened tasks, remembered so that the stored α can be read and written by task."""
        active = super().usable_tasks(gram, losses)
        self.rows = active.nonzero().squeeze(1).tolist()
        return active

    def gramian_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """α (solved this step, or the stored one) times the max-norm clip factor."""
        stored = self.alpha.to(device="cpu", dtype=torch.float64)[self.rows]
        alpha = stored
        if self.steps_ % self.params.update_weights_every == 0:
            solved, ok = nash_bargaining_weights(gram)
            if ok:
                alpha = solved
                self.alpha.zero_()
                self.alpha[self.rows] = solved.to(self.alpha)
            else:
                self.events_["solver_failed_steps"] += 1
        return alpha * clip_factor(gram, alpha, self.params.max_norm)

    def step(self, ctx: StepContext) -> StepOutput:
        """GramianMethod's step, counting steps for update_weights_every."""
        out = super().step(ctx)
        self.steps_ += 1
        return out
