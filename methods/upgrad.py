"""UPGrad: the average of every task gradient projected onto the dual cone of all of them.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (UPGrad).
Each task gradient g_i = Jᵀe_i is projected onto the dual cone {x : Jx ≥ 0} and the projections
are combined,

    A_UPGrad(J) = (1/T) Σ_i π_J(g_i) = Jᵀ (1/T) Σ_i w_i,   w_i = argmin_{v ≥ e_i} vᵀGv

(Proposition 1; the projection and its solver are in methods/dual_cone.py). The result conflicts
with no task (J·A ≥ 0); when no two gradients conflict it is the mean gradient; it weights every
task at least as much as the mean does (w_i ≥ e_i).

Defaults (norm_eps 1e-4, reg_eps 1e-4: the authors' normalization and regularization of G before
the QP) from TorchJD@46962c2be7788503c151007fa013f761a6238ef2 src/torchjd/aggregation/_upgrad.py
lines 34–35 (UPGrad) and 78–79 (UPGradWeighting), the preference vector (the mean) from line 84
and the combination, the sum of the projected rows' weights, from lines 89–93.

Scale: the projections are summed, not averaged: the weights applied and logged are Σ_i w_i, T
times the paper's (a preference vector of ones instead of 1/T), so that with no conflict the
update is EW's Σ_t g_t (weights all 1) and a shared learning rate compares directions. The weights
are ≥ 1 and sum to T or more (weight_scale "none"). Task heads receive their own losses'
gradients, as in TorchJD's mtl_backward.
"""

from __future__ import annotations

import numpy as np

from mtlbench.methods.dual_cone import DualConeMethod
from mtlbench.registry import register_method


@register_method("upgrad")
class UPGrad(DualConeMethod):
    """UPGrad on the shared parameters' gradients; weights Σ_i w_i (T × the paper's mean)."""

    description = "UPGrad (Quinton & Rey 2024): sum of each task gradient projected onto the dual cone of all."

    def targets(self, num_tasks: int) -> np.ndarray:
        """e_1 … e_k: every task gradient is projected."""
        return np.eye(num_tasks)
