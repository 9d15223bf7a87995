"""PCGrad: project away the conflicting components between task gradients.

Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020 (Algorithm 1). For each
task i, starting from g_i^PC = g_i, for every other task j in a random order:

    if g_i^PCᵀ g_j < 0:   g_i^PC ← g_i^PC − (g_i^PCᵀ g_j / ‖g_j‖²) g_j

(always against the *original* g_j, as in the paper and the authors' code), and the shared
update is Δθ = Σ_i g_i^PC.

Each g_i^PC stays a linear combination of the original gradients, g_i^PC = Σ_j C_ij g_j, and
every inner product it needs is an entry of the Gramian: g_i^PCᵀ g_j = (C G)_ij. So the method
works on G only (`pcgrad_coefficients`) and the update is w @ J with the effective task weights
w_j = Σ_i C_ij (`pcgrad_weights`), the weights logged.

Scale: as in the paper the projected gradients are summed, not averaged: without conflicts the
weights are all 1 (EW); under conflict they are what the projections make them, not
renormalized (weight_scale "none"). The random orders come from the method's own generator.
"""

from __future__ import annotations

import numpy as np
import torch

from mtlbench.methods.gramian import GramianMethod
from mtlbench.registry import register_method


def pcgrad_orders(num_tasks: int, generator: torch.Generator) -> torch.Tensor:
    """(T, T−1): row i lists the other tasks in the random order task i is projected against them."""
    orders = torch.empty((num_tasks, max(num_tasks - 1, 0)), dtype=torch.long)
    for i in range(num_tasks):
        others = torch.tensor([j for j in range(num_tasks) if j != i], dtype=torch.long)
        orders[i] = others[torch.randperm(num_tasks - 1, generator=generator)]
    return orders


def pcgrad_coefficients(gram: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """C (T, T) with g_i^PC = Σ_j C_ij g_j after PCGrad's sequential projections in `orders`."""
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    coef = np.eye(g.shape[0])
    for i, order in enumerate(orders.tolist()):
        for j in order:
            dot = float(coef[i] @ g[:, j])  # g_i^PCᵀ g_j
            if dot < 0.0 and g[j, j] > 0.0:
                coef[i, j] -= dot / g[j, j]
    return torch.from_numpy(coef)


def pcgrad_weights(gram: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Effective task weights w (T,): Σ_i g_i^PC = Σ_j w_j g_j."""
    return pcgrad_coefficients(gram, orders).sum(dim=0)


@register_method("pcgrad")
class PCGrad(GramianMethod):
    """PCGrad on the shared parameters' gradients; weights are the coefficients of Σ_i g_i^PC."""

    description = "PCGrad (Yu et al. 2020): project each task gradient off conflicting ones, sum."

    def gramian_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """PCGrad's effective weights with fresh random orders from the method's generator."""
        return pcgrad_weights(gram, pcgrad_orders(gram.shape[0], self.generator_))
