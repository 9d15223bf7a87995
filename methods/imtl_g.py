"""IMTL-G: the aggregated gradient has equal projections onto every task's gradient direction.

Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021 (section 3.1, IMTL-G). With
u_t = g_t / ‖g_t‖ the unit task gradients, IMTL-G picks α with Σ_t α_t = 1 such that the update
g = Σ_t α_t g_t has the same projection onto every u_t:

    gᵀu_1 = gᵀu_t  (t = 2 … T),   closed form  α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹,  α_1 = 1 − Σ_{t≥2} α_t,

with the rows of U and D being u_1 − u_t and g_1 − g_t. In inner products: gᵀu_t = (Gα)_t / √G_tt,
so the condition reads Gα = c·d with d_t = ‖g_t‖ = √G_tt, i.e.

    α = G⁻¹d / (1ᵀG⁻¹d)                                                  (`imtl_g_weights`)

which is the paper's closed form for linearly independent gradients (the paper's assumption;
tests/test_method_imtl_g.py checks both against each other) and is computed from the Gramian.
Linearly dependent gradients (singular G) get the minimum-norm least-squares solution x = G⁺d
(the generalization of Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024,
as in TorchJD@46962c2be7788503c151007fa013f761a6238ef2 src/torchjd/aggregation/_imtl_g.py lines
32–39): a duplicated task splits its weight and the update is the independent tasks' IMTL-G; a
task that is a combination of others can leave no equal-projection point, and G⁺d is then the
least-squares compromise. G⁺ drops eigenvalues at most k·ε·λ_max (ε the float64 epsilon, as
torch.linalg.pinv's default); G is scaled to max_t G_tt = 1 first (α does not change). Where 1ᵀG⁺d
is (numerically) 0 the equal-projection point lies at infinity (e.g. g and −g): the step gets no
update (weights 0, counted as "degenerate_steps"), as in TorchJD (line 37).

No hyperparameters. The authors released no code; the independent implementations checked are
TorchJD (above), LibMTL@4336804847eaa5e0b924b743d76beec7ac3fdc97 LibMTL/weighting/IMTL.py lines
28–34 and AvivNavon/nash-mtl@cce18403ef5557a6b30f4ba43b896117107d6902 methods/weight_methods.py
lines 671–739 (both the closed form with D, U above).

Scale: the paper's α sums to 1; the weights applied and logged are T·α, which sum to T like EW's,
so the shared learning rate compares directions (as MGDA here; weight_scale "sum-to-T"). With
identical gradients this is EW. Nothing in the closed form keeps α ≥ 0, and it is not clipped.

Deviations: (1) the gradients are those of the shared parameters, as in the TorchJD, LibMTL and
Nash-MTL implementations; the paper's Algorithm 1 takes them with respect to the shared feature
z to save computation (an MGDA-UB-like approximation). (2) IMTL-L, the paper's loss-scale half
of the hybrid IMTL, is not part of IMTL-G and is not included. Task heads receive their own
losses' gradients, as in the paper's Algorithm 1.
"""

from __future__ import annotations

import numpy as np
import torch

from mtlbench.methods.gramian import GramianMethod
from mtlbench.registry import register_method

EPS = float(np.finfo(np.float64).eps)
DEGENERATE_RTOL = 1e-10  # |1ᵀx| at most this × ‖x‖₁: the weights α = x / 1ᵀx are unbounded


def pinv_solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """G⁺ rhs for a symmetric PSD G, eigenvalues ≤ k·ε·λ_max treated as 0 (torch.linalg.pinv's cut)."""
    lam, vec = np.linalg.eigh(gram)
    keep = lam > gram.shape[0] * EPS * max(float(lam.max()), 0.0)
    basis = vec[:, keep]
    return basis @ ((basis.T @ rhs) / lam[keep])


def imtl_g_weights(gram: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """α (k,) with Σα = 1 and equal projections of Σ_t α_t g_t onto every g_t/‖g_t‖, and whether
    one exists (False: 1ᵀG⁺d is 0, the weights are returned as 0)."""
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    g = g / max(float(np.diag(g).max()), np.finfo(float).tiny)  # α does not change with the scale of G
    x = pinv_solve(g, np.sqrt(np.clip(np.diag(g), 0.0, None)))
    total = float(x.sum())
    if not (np.all(np.isfinite(x)) and abs(total) > DEGENERATE_RTOL * float(np.abs(x).sum())):
        return torch.zeros(g.shape[0], dtype=torch.float64), False
    return torch.from_numpy(x / total), True


@register_method("imtl-g")
class IMTLG(GramianMethod):
    """IMTL-G on the shared parameters' gradients; weights T·α."""

    description = "IMTL-G (Liu et al. 2021): aggregate with equal projections on every unit task gradient; T·α."
    event_names = ("degenerate_steps",)

    def gramian_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """T·α for the usable tasks (α solved on their Gramian)."""
        alpha, ok = imtl_g_weights(gram)
        self.events_["degenerate_steps"] += int(not ok)
        return self.num_tasks * alpha
