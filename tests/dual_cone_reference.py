"""An independent reference for UPGrad's and DualProj's tests: the projection onto the dual cone
K = {y : J y ≥ 0} computed in the gradients' own space, not from the Gramian.

Moreau's decomposition: x = π_K(x) + π_K°(x) with K° = {−Jᵀλ : λ ≥ 0} the polar cone, so
π_K(x) = x + Jᵀλ* with λ* = argmin_{λ ≥ 0} ‖x + Jᵀλ‖², solved by L-BFGS-B (bounds only).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize


def project_onto_dual_cone(j: np.ndarray, x: np.ndarray) -> np.ndarray:
    """argmin_y ‖y − x‖² subject to J y ≥ 0."""
    res = minimize(
        lambda lam: float(np.sum((x + lam @ j) ** 2)),
        np.zeros(j.shape[0]),
        jac=lambda lam: 2 * j @ (x + lam @ j),
        bounds=[(0, None)] * j.shape[0],
        method="L-BFGS-B",
        options={"ftol": 1e-16, "gtol": 1e-13, "maxiter": 20000},
    )
    return x + res.x @ j


def conflicting_jacobian(t: int, p: int, seed: int) -> np.ndarray:
    """Random gradients of different norms, many pairs in conflict."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(t, p)) * rng.lognormal(0, 1, size=(t, 1))


def torchjd_weighting(weighting: str, j: np.ndarray) -> np.ndarray:
    """TorchJD's weights (its `torchjd.aggregation.<weighting>` with defaults: the authors' code, quadprog)
    for the Jacobian j; the test is skipped where torchjd's dual-cone extra is not installed."""
    torchjd = pytest.importorskip("torchjd")
    pytest.importorskip("qpsolvers")
    pytest.importorskip("quadprog")
    return getattr(torchjd.aggregation, weighting)()(torch.from_numpy(j @ j.T)).numpy()
