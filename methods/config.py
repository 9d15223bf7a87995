"""ConFIG: the conflict-free update, equally aligned with every task gradient.

Liu et al., "ConFIG: Towards Conflict-free Training of Physics Informed Neural Networks", ICLR 2025,
eq. 2: with unit gradients U = [g_1/‖g_1‖, …, g_T/‖g_T‖]ᵀ (T × P),

    g_u = 𝒰(U⁺ 1_T),   g_ConFIG = (Σ_t g_tᵀ g_u) g_u,   𝒰(v) = v/‖v‖,

U⁺ the pseudo-inverse: U g_u ∝ 1, so the update has the same positive cosine with every gradient
when U has full row rank, and its length is the sum of the gradients' projections on it.

On the Gramian (`config_coefficients`): with D = diag(‖g_t‖) and the cosine matrix C = D⁻¹GD⁻¹ = UUᵀ,
U⁺ = Uᵀ(UUᵀ)⁺, so U⁺1 = Jᵀ c with c = D⁻¹ C⁺ 1; then ‖U⁺1‖² = cᵀGc and Σ_t g_tᵀU⁺1 = 1ᵀGc, and

    g_ConFIG = Σ_t w_t g_t,   w = (1ᵀGc / cᵀGc) c.

C⁺ is torch.linalg.pinv(C, hermitian=True) in float64 (cutoff T·eps·λ_max on C's eigenvalues).
Where C⁺1 = 0 (e.g. g and −g) U⁺1 = 0, and like the authors' `unit_vector` of a zero vector the
update is 0 (weights 0, counted as "zero_direction_steps").

Authors' code: tum-pbs/ConFIG@94862437f451f175673bce9c85f3e14bd9182c21 conflictfree/grad_operator.py
lines 125-140 (`ConFIG_update`: `torch.linalg.lstsq(units, weights)` by default, or `pinv(units) @ weights`,
both U⁺1 for the minimum-norm solution; EqualWeight, weight_model.py line 58) and
conflictfree/length_model.py lines 104-110 (ProjectionLength: Σ_t g_tᵀg_u). No hyperparameters: the
weight model is EqualWeight and the length model ProjectionLength, their defaults (grad_operator.py
lines 83-84) and the configuration of their MTL experiment (experiments/MTL/methods/weight_methods.py
line 1235, `ConFIGOperator()`).

Scale: the update's length is Σ_t ‖g_t‖ cos(g_t, g_u), not renormalized (weight_scale "none"); with
identical gradients it is Σ_t g_t (weights all 1, EW); with orthogonal ones w_t = mean_s ‖g_s‖ / ‖g_t‖.

Deviations: for two tasks the authors' operator switches to a closed form (`ConFIG_update_double`,
grad_operator.py lines 272-279) that gives the same update when g_1, g_2 are not parallel; here the
general formula serves every T. U⁺ comes from the Gramian in float64, not from a float32 lstsq on the
(T, P) matrix (whose default cutoff on the CPU, max(T, P)·eps, exceeds 1 beyond ~8M float32 parameters). Task heads receive their own losses' gradients (as in the authors' MTL code).
"""

from __future__ import annotations

import torch

from mtlbench.methods.gramian import GramianMethod
from mtlbench.registry import register_method


def config_coefficients(gram: torch.Tensor) -> torch.Tensor:
    """c (T,) with U⁺1 = Σ_t c_t g_t: c = D⁻¹ C⁺ 1 for the cosine matrix C = D⁻¹GD⁻¹ (float64)."""
    g = gram.detach().to(device="cpu", dtype=torch.float64)
    inv_norms = g.diagonal().clamp(min=0).rsqrt()
    cosines = g * torch.outer(inv_norms, inv_norms)
    return inv_norms * (torch.linalg.pinv(cosines, hermitian=True) @ torch.ones_like(inv_norms))


def config_weights(gram: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """w (T,) with g_ConFIG = Σ_t w_t g_t, and False when U⁺1 = 0 (then w = 0)."""
    g = gram.detach().to(device="cpu", dtype=torch.float64)
    c = config_coefficients(g)
    sq_norm = c @ g @ c  # ‖U⁺1‖²
    scale = (c.abs() @ g.abs() @ c.abs()).clamp(min=torch.finfo(torch.float64).tiny)
    if not bool(sq_norm > 1e-12 * scale):  # a vanishing direction up to rounding: 𝒰(0) = 0
        return torch.zeros_like(c), False
    return (g.sum(dim=0) @ c) / sq_norm * c, True


@register_method("config")
class ConFIG(GramianMethod):
    """ConFIG on the shared parameters' gradients; weights (1ᵀGc / cᵀGc) c with c = D⁻¹ C⁺ 1."""

    description = "ConFIG (Liu et al. 2025): equal cosine with every gradient, length Σ of projections."
    event_names = ("zero_direction_steps",)

    def gramian_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """ConFIG's effective weights of the usable tasks."""
        weights, nonzero = config_weights(gram)
        self.events_["zero_direction_steps"] += int(not nonzero)
        return weights
