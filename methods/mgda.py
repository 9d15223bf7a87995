"""MGDA and MGDA-UB: the min-norm point of the convex hull of the task gradients.

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.

* MGDA: the common descent direction is the min-norm element of conv{g_1, …, g_T},

      α* = argmin_{α ∈ Δ_T} ‖Σ_t α_t g_t‖² = argmin_{α ∈ Δ_T} αᵀ G α,   G = J Jᵀ,

  solved on the Gramian. Two tasks have the closed form (the paper's 2-task line search)
  α_1 = clip( (g_2 − g_1)ᵀg_2 / ‖g_1 − g_2‖², 0, 1 ), α_2 = 1 − α_1. For T > 2 the paper uses
  Frank–Wolfe; here Frank–Wolfe with away steps and exact line search (`gramian.simplex_qp`),
  which converges to the exact minimizer where plain Frank–Wolfe stalls.
* MGDA-UB (`mgda-ub`): the same problem on the gradients with respect to the shared
  representation Z (the 512-d features of the batch), min_α ‖Σ_t α_t ∇_Z L_t‖², an upper bound
  whose solution needs one backward per task through the heads only.

Gradient normalization (`normalization`; from the authors' code, where it is "optional and not
included in the paper"): each g_t is divided by n_t before solving — "none": n_t = 1, "l2":
n_t = ‖g_t‖, "loss": n_t = L_t, "loss+": n_t = L_t ‖g_t‖ — and, as in their training loop, α is
applied to the *unnormalized* losses: the update is Σ_t α_t g_t.

Default "loss+" for both MGDA and MGDA-UB, from the authors' configs:
intel-isl/MultiObjectiveOptimization/sample.json @5d8e8343c56cf3184081f71cc4a661af64e7cf7e
(unchanged since the first commit 1c6d0d5), line 8 `"normalization_type": "loss+"`, with
`"algorithm": "mgda"`, `"use_approximation": true` (MGDA-UB) on CelebA's 40 binary attributes —
their only released configuration, and the closest to this benchmark's 14 binary findings.
Their training loop (multi_task/train_multi_task.py, lines 157–161 at that commit) normalizes
the same way for MGDA and MGDA-UB, so one default serves both. The default was "none" (the
paper's algorithm) before issue 17; `--param mgda.normalization=none` gives it back. A changed
default is a new cell: the resolved hyperparameters are part of a run's identity, so runs stored
with "none" are never taken for the new default's results.

Scale: α lies on the simplex (Σ α = 1); the weights returned and applied are T·α, which sum to T
like EW's, so a shared learning rate compares directions rather than a 1/T step
(normalization "sum-to-T"). With identical gradients this is exactly EW (weights all 1).

Deviation from the authors' code: task heads receive the gradient of their own loss (the
harness contract), not α_t times it.
"""

from __future__ import annotations


import numpy as np
import torch

from mtlbench.methods.gramian import GramianMethod, simplex_qp
from mtlbench.methods.params import MGDA_NORMALIZATIONS as WEIGHT_SCALES
from mtlbench.registry import register_method


def min_norm_2(g11: float, g12: float, g22: float) -> float:
    """γ ∈ [0, 1] minimizing ‖γ g_1 + (1 − γ) g_2‖² from the three inner products.

    γ = (g22 − g12) / (g11 + g22 − 2 g12) clipped to [0, 1]; 1/2 when g_1 = g_2 (any γ is optimal).
    """
    gap = g11 + g22 - 2.0 * g12  # ‖g_1 − g_2‖²
    if gap <= 0.0:
        return 0.5
    return float(min(max((g22 - g12) / gap, 0.0), 1.0))


def min_norm_weights(gram: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """α on the simplex minimizing αᵀGα (the min-norm point of the hull), and whether it converged."""
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    t = g.shape[0]
    if t == 1:
        return torch.ones(1, dtype=torch.float64), True
    if t == 2:
        gamma = min_norm_2(g[0, 0], g[0, 1], g[1, 1])
        return torch.tensor([gamma, 1.0 - gamma], dtype=torch.float64), True
    scale = max(float(np.diag(g).max()), np.finfo(float).tiny)
    # from the uniform point: where the minimizer is not unique (e.g. identical gradients),
    # the weights stay as even as the solver's path allows
    alpha, converged = simplex_qp(g / scale, np.zeros(t), start=np.full(t, 1.0 / t))
    return torch.from_numpy(alpha), converged


def gradient_normalizers(sq_norms: torch.Tensor, losses: torch.Tensor, normalization: str) -> torch.Tensor:
    """n_t for each task: 1, ‖g_t‖, L_t or L_t‖g_t‖ (the authors' none | l2 | loss | loss+)."""
    if normalization == "none":
        return torch.ones_like(sq_norms)
    if normalization == "l2":
        return sq_norms.clamp(min=0).sqrt()
    if normalization == "loss":
        return losses.to(sq_norms)
    if normalization == "loss+":
        return losses.to(sq_norms) * sq_norms.clamp(min=0).sqrt()
    raise ValueError(f"unknown MGDA normalization {normalization!r}; valid: {', '.join(WEIGHT_SCALES)}")


def mgda_weights(gram: torch.Tensor, losses: torch.Tensor, normalization: str) -> tuple[torch.Tensor, bool]:
    """α (simplex) of the min-norm point of the normalized gradients g_t / n_t, and convergence."""
    n = gradient_normalizers(gram.diagonal(), losses, normalization)
    return min_norm_weights(gram / torch.outer(n, n))


@register_method("mgda")
class MGDA(GramianMethod):
    """MGDA on the shared parameters' gradients; applied weights T·α."""

    description = "MGDA (Sener & Koltun 2018): min-norm point of the task gradients' hull; weights T·α."
    event_names = ("invalid_normalizer_rows", "solver_not_converged_steps")

    def usable_tasks(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """Finite non-zero gradients whose normalizer n_t is finite and positive."""
        active = super().usable_tasks(gram, losses)
        n = gradient_normalizers(gram.diagonal(), losses, self.params.normalization)
        bad = active & ~(torch.isfinite(n) & (n > 0))
        self.events_["invalid_normalizer_rows"] += int(bad.sum())
        return active & ~bad

    def gramian_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """T·α, α the min-norm weights of the (normalized) usable gradients."""
        alpha, converged = mgda_weights(gram, losses, self.params.normalization)
        if not converged:
            self.events_["solver_not_converged_steps"] += 1
        return self.num_tasks * alpha


@register_method("mgda-ub")
class MGDAUB(MGDA):
    """MGDA-UB: MGDA on the gradients with respect to the shared 512-d features of the batch."""

    description = "MGDA-UB (Sener & Koltun 2018): MGDA on the shared-feature gradients; weights T·α."
