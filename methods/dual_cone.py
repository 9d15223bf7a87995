"""Projection onto the dual cone of the task gradients, from the Gramian: UPGrad's and DualProj's shared part.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024. The dual cone of the
rows of J is {x : J x ≥ 0}, the directions that conflict with no task; π_J(x) is the Euclidean
projection onto it. By the paper's Proposition 1, for x = Jᵀu

    π_J(Jᵀu) = Jᵀw,   w = argmin_{v ≥ u} vᵀ G v,   G = J Jᵀ,

so the projection needs only the Gramian. With G = AᵀA (A = Λ^{1/2}Vᵀ from G's eigendecomposition)
and v = u + x this is the non-negative least-squares problem min_{x ≥ 0} ‖A x + A u‖², solved
exactly by scipy's Lawson–Hanson active-set NNLS (`project_weights`); its optimality conditions are
the QP's: v ≥ u, G v ≥ 0 and (v − u)ᵀ G v = 0. A is k×k, so a solve costs microseconds.

The authors' code (TorchJD@46962c2be7788503c151007fa013f761a6238ef2
src/torchjd/aggregation/_upgrad.py lines 89–93, _dualproj.py lines 88–92) first divides G by its
trace (replacing it by 0 when the trace is below norm_eps) and adds reg_eps·I
(src/torchjd/_linalg/_gramian.py `normalize`, `regularize`), both 1e-4 by default, then solves the
QP with quadprog (_utils/dual_cone.py lines 50–51), which needs G positive definite.
`regularized_gramian` does the same, so the defaults give their weights; reg_eps = 0 gives the
paper's exact projection (our solver does not need G ≻ 0). The projection is unchanged by the
trace division; the regularization makes it the projection for the Jacobian [J, √(reg_eps·tr G)·I],
so G w ≥ −reg_eps·tr(G)·w rather than ≥ 0.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import nnls

from mtlbench.methods.gramian import GramianMethod
from mtlbench.methods.params.gramian_weighting import DualConeParams

NNLS_MAX_ITER = 50  # × k active-set iterations per solve (scipy's default: 3 × k)


def regularized_gramian(gram: np.ndarray, norm_eps: float, reg_eps: float) -> np.ndarray:
    """G / trace(G) + reg_eps·I, with G / trace(G) taken as 0 when trace(G) < norm_eps (TorchJD's)."""
    trace = float(np.trace(gram))
    normalized = np.zeros_like(gram) if trace < norm_eps else gram / trace
    return normalized + reg_eps * np.eye(gram.shape[0])


def project_weights(gram: np.ndarray, targets: np.ndarray) -> np.ndarray | None:
    """W (n, k): row i is argmin_{v ≥ U_i} vᵀGv for each row U_i of `targets` (n, k), G symmetric PSD;
    None if NNLS did not finish (it stops after NNLS_MAX_ITER·k active-set changes)."""
    lam, vec = np.linalg.eigh(gram)
    root = np.sqrt(np.clip(lam, 0.0, None))[:, None] * vec.T  # AᵀA = G
    out = np.empty(targets.shape, dtype=np.float64)
    for i, u in enumerate(targets):
        try:
            x, _ = nnls(root, -(root @ u), maxiter=NNLS_MAX_ITER * gram.shape[0])
        except RuntimeError:  # scipy's "Maximum number of iterations reached"
            return None
        out[i] = u + x
    return out


class DualConeMethod(GramianMethod):
    """A method whose update is a sum of projections Jᵀw_i = π_J(Jᵀu_i); subclasses choose the u_i."""

    weight_scale = "none"
    Params = DualConeParams
    event_names = ("solver_failed_steps",)

    def targets(self, num_tasks: int) -> np.ndarray:
        """The weight vectors u_i (n, k) whose combinations Jᵀu_i are projected."""
        raise NotImplementedError

    def gramian_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """Σ_i w_i for the usable tasks (0 and counted if the solver did not finish)."""
        p = self.params
        g = regularized_gramian(gram.detach().to(device="cpu", dtype=torch.float64).numpy(), p.norm_eps, p.reg_eps)
        weights = project_weights(g, self.targets(g.shape[0]))
        if weights is None:
            self.events_["solver_failed_steps"] += 1
            return torch.zeros(g.shape[0], dtype=torch.float64)
        return torch.from_numpy(weights.sum(axis=0))
