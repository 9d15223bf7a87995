"""GradVac: raise each pair's gradient similarity to an adaptive target (Gradient Vaccine).

Wang et al., "Gradient Vaccine: Investigating and Improving Multi-task Optimization in Massively
Multilingual Models", ICLR 2021 (Algorithm 1). Every ordered pair (i, j) keeps a target cosine
φ̂_ij, an EMA of the observed ones (state, from 0). Each step, for each task i, starting from
g_i' = g_i, for every other task j in a random order:

    φ_ij = cos(g_i', g_j);
    if φ_ij < φ̂_ij:  g_i' ← g_i' + ‖g_i'‖ (φ̂_ij √(1−φ_ij²) − φ_ij √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²)) · g_j,
                      which makes cos(g_i', g_j) = φ̂_ij exactly;
    φ̂_ij ← (1−β) φ̂_ij + β φ_ij,

always against the original g_j, and the update is Σ_i g_i'. With φ̂ = 0 the adjustment is
PCGrad's projection. As for PCGrad (methods/pcgrad.py), g_i' = Σ_j C_ij g_j and every quantity
above is an entry of G: g_i'ᵀg_j = (C G)_ij, ‖g_i'‖² = (C G Cᵀ)_ii; so the method works on G only
(`gradvac_pass`) and returns the effective weights w_j = Σ_i C_ij (w @ J = Σ_i g_i').

Default β = 0.5 and whole-model granularity, LibMTL's
(median-research-group/LibMTL@4336804847eaa5e0b924b743d76beec7ac3fdc97 LibMTL/config.py lines 42-44,
`--GradVac_beta` 0.5, `--GradVac_group_type` 0 = whole_model; the update loop:
LibMTL/weighting/GradVac.py lines 57-75). The authors released no code; the paper applies GradVac
per layer group in some experiments, here the shared trunk is one group.

State: the targets φ̂ (T, T) are the buffer `targets_` (float64), so they move with `to()` and
checkpoint with `state_dict`; the random orders come from the method's own generator (LibMTL shuffles
with Python's global `random`).

Deviations from LibMTL: no 1e-8 in the denominators (the paper's formula; LibMTL adds 1e-8 to
‖g_i'‖‖g_j‖ and to ‖g_j‖√(1−φ̂²), which makes it depend on the gradients' scale). Instead:
cosines are clipped to [−1, 1] against rounding; a g_i' that has cancelled to 0 (e.g. g and −g) has
cosine 0, as LibMTL's 1e-8 makes it, and is not adjusted; a target of exactly ±1 cannot be reached by
a finite step and is skipped (counted, "unreachable_target_pairs"). A task left out of a step (NaN or
zero gradient, see gramian.py) neither adjusts nor is adjusted, and its pairs' targets are kept.
Weights: the coefficients of Σ_i g_i', not renormalized (weight_scale "none"), as PCGrad's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mtlbench.methods.gramian import ZERO_GRADIENT_RTOL, GramianMethod
from mtlbench.methods.pcgrad import pcgrad_orders
from mtlbench.registry import register_method


@dataclass(frozen=True)
class GradVacPass:
    """One step of GradVac on a Gramian: the coefficients C, the updated targets, and counts."""

    coefficients: torch.Tensor  # (k, k): g_i' = Σ_j C_ij g_j
    targets: torch.Tensor  # (k, k): φ̂ after the step's EMA updates (diagonal untouched)
    adjusted_pairs: int
    unreachable_pairs: int


def vaccine_step(norm_i: float, norm_j: float, phi: float, target: float) -> float:
    """The multiple of g_j that, added to g_i', makes their cosine `target` (paper, Algorithm 1)."""
    return (
        norm_i
        * (target * math.sqrt(1.0 - phi * phi) - phi * math.sqrt(1.0 - target * target))
        / (norm_j * math.sqrt(1.0 - target * target))
    )


def gradvac_pass(gram: torch.Tensor, targets: torch.Tensor, orders: torch.Tensor, beta: float) -> GradVacPass:
    """GradVac's sequential adjustments on the Gramian for the given orders (row i: the j's of task i)."""
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    phi_hat = targets.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    k = g.shape[0]
    coef = np.eye(k)
    norms = np.sqrt(np.clip(np.diag(g), 0.0, None))
    cancelled = ZERO_GRADIENT_RTOL * float(np.diag(g).max(initial=0.0))
    adjusted = unreachable = 0
    for i, order in enumerate(orders.tolist()):
        dots = coef[i] @ g  # g_i'ᵀ g_j for every j
        for j in order:
            sq_i = float(dots @ coef[i])  # ‖g_i'‖²
            norm_i = math.sqrt(sq_i) if sq_i > cancelled else 0.0
            phi = min(max(float(dots[j]) / (norm_i * norms[j]), -1.0), 1.0) if norm_i > 0.0 else 0.0
            target = float(phi_hat[i, j])
            if phi < target and norm_i > 0.0:
                if abs(target) >= 1.0:
                    unreachable += 1
                else:
                    step = vaccine_step(norm_i, float(norms[j]), phi, target)
                    coef[i, j] += step
                    dots = dots + step * g[j]
                    adjusted += 1
            phi_hat[i, j] = (1.0 - beta) * target + beta * phi
    return GradVacPass(torch.from_numpy(coef), torch.from_numpy(phi_hat), adjusted, unreachable)


@register_method("gradvac")
class GradVac(GramianMethod):
    """GradVac on the shared parameters' gradients; weights are the coefficients of Σ_i g_i'."""

    description = "GradVac (Wang et al. 2021): raise each pair's cosine to its EMA target, sum."
    event_names = ("unreachable_target_pairs",)

    def setup(self) -> None:
        self.register_buffer("targets_", torch.zeros(self.num_tasks, self.num_tasks, dtype=torch.float64))
        self._rows: list[int] = []  # the step's usable tasks, set by usable_tasks (not state)

    def usable_tasks(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """The usable tasks, remembered so that their rows of the targets are the ones updated."""
        active = super().usable_tasks(gram, losses)
        self._rows = active.nonzero().squeeze(1).tolist()
        return active

    def gramian_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """Σ_i C_ij over the usable tasks, with fresh random orders; updates their targets."""
        rows = torch.tensor(self._rows, dtype=torch.long)
        targets = self.targets_.to(device="cpu")
        result = gradvac_pass(
            gram, targets[rows][:, rows], pcgrad_orders(gram.shape[0], self.generator_), self.params.beta
        )
        targets[rows.unsqueeze(1), rows] = result.targets
        self.targets_.copy_(targets)
        self.events_["unreachable_target_pairs"] += result.unreachable_pairs
        return result.coefficients.sum(dim=0)
