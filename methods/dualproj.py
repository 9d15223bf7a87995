"""DualProj: the average gradient projected onto the dual cone of the task gradients.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (the DualProj aggregator,
from Lopez-Paz & Ranzato's GEM, NeurIPS 2017, eq. 11): the mean gradient is projected onto the
dual cone {x : Jx ≥ 0},

    A_DualProj(J) = π_J(Jᵀ 1/T) = Jᵀw,   w = argmin_{v ≥ 1/T} vᵀGv

(Proposition 1; the projection and its solver are in methods/dual_cone.py). It is the direction
closest to the mean gradient that conflicts with no task; with no conflict it is the mean.

Defaults (norm_eps 1e-4, reg_eps 1e-4, the authors' normalization and regularization of G before
the QP) from TorchJD@46962c2be7788503c151007fa013f761a6238ef2 src/torchjd/aggregation/_dualproj.py
lines 33–34 (DualProj) and 77–78 (DualProjWeighting); the projected vector, the mean, from the
preference vector's default and lines 88–92.

Scale: the sum Σ_t g_t (EW's update) is projected instead of the mean, i.e. u = 1 instead of 1/T:
the weights applied and logged are T times the paper's (the projection is positively homogeneous),
so with no conflict they are all 1 (EW). They are ≥ 1 and sum to T or more (weight_scale "none").
Task heads receive their own losses' gradients, as in TorchJD's mtl_backward.
"""

from __future__ import annotations

import numpy as np

from mtlbench.methods.dual_cone import DualConeMethod
from mtlbench.registry import register_method


@register_method("dualproj")
class DualProj(DualConeMethod):
    """DualProj on the shared parameters' gradients; weights w (T × the paper's)."""

    description = "DualProj (Quinton & Rey 2024): the summed gradient projected onto the dual cone of all."

    def targets(self, num_tasks: int) -> np.ndarray:
        """1: the sum of the task gradients is projected."""
        return np.ones((1, num_tasks))
