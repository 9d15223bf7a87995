"""CAGrad: conflict-averse gradient descent.

Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021. With
g_0 = (1/T) Σ_t g_t the average gradient and c ∈ [0, 1) (default 0.4), the update maximizes the
worst task's improvement near g_0:

    d* = argmax_d min_t g_tᵀd   s.t.   ‖d − g_0‖ ≤ c‖g_0‖.

Its dual (as solved in the authors' code, `cagrad_exact`), with φ = c²‖g_0‖² and g_w = Σ w_t g_t:

    w* = argmin_{w ∈ Δ_T}  g_wᵀg_0 + √φ ‖g_w‖,       d* = g_0 + (√φ / ‖g_w*‖) g_w*.

Everything is an inner product, so it is solved on the Gramian G: g_wᵀg_0 = wᵀG 1/T and
‖g_w‖² = wᵀGw, and d* = Σ_t (1/T + λ w*_t) g_t with λ = √φ / ‖g_w*‖ (`cagrad_coefficients`).

Solver (`solve_cagrad_dual`): the dual is non-smooth where g_w = 0, and it can be optimal
there when the gradients' hull holds 0. Using √φ‖v‖ = min_{τ>0} (√φ/2)(‖v‖²/τ + τ), for a fixed
τ the problem is the simplex QP min_w wᵀG1/T + (√φ/2τ) wᵀGw (`gramian.simplex_qp`), and the
optimal τ solves τ = ‖g_{w(τ)}‖ (τ − ‖g_{w(τ)}‖ changes sign once), found by fixed-point steps
safeguarded by bisection. The update uses λ = √φ/τ with τ on the feasible side of the root, so
‖d − g_0‖ ≤ c‖g_0‖ always holds; τ is kept ≥ 1e-4 × the largest ‖g_t‖ (a step where the root lies
below that is counted as "pareto_stationary_steps": λ stays ≤ 1e4·√φ/max‖g_t‖, which keeps
the float32 combination w @ J accurate).

Scale, as in the authors' code: d is divided by 1 + c² (`rescale` "1+c^2", their default;
"1+c" and "none" are their other options) and multiplied by T to match the sum of the losses
(the authors' "× 2 to match the sum loss" for two tasks). The applied weights are
T (1/T + λ w*_t) / (1 + c²); they sum to T (1 + λ)/(1 + c²), not to T (weight_scale "none").
c = 0 gives d = g_0, i.e. EW.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mtlbench.methods.gramian import GramianMethod, simplex_qp
from mtlbench.methods.params import CAGRAD_RESCALES as RESCALES
from mtlbench.registry import register_method

MIN_TAU = 1e-4  # smallest ‖g_w‖ the solver resolves, relative to the largest ‖g_t‖
ROOT_RTOL = 1e-12
ROOT_MAX_ITER = 100


@dataclass(frozen=True)
class CAGradDual:
    """Solution of CAGrad's dual: w on the simplex, λ = √φ/‖g_w‖, and how it was reached."""

    w: torch.Tensor
    lam: float
    converged: bool
    pareto_stationary: bool  # the root ‖g_w‖ lies below MIN_TAU: 0 is (nearly) in the hull


def _qp_at(
    gram: np.ndarray, linear: np.ndarray, s: float, tau: float, start: np.ndarray | None
) -> tuple[np.ndarray, float, bool]:
    """w(τ) = argmin_{w∈Δ} wᵀb + (s/2τ) wᵀGw, its ‖g_w‖, and whether the QP converged."""
    w, converged = simplex_qp(gram * (s / tau), linear, start)
    return w, math.sqrt(max(float(w @ gram @ w), 0.0)), converged


def solve_cagrad_dual(gram: torch.Tensor, c: float) -> CAGradDual:
    """min_{w∈Δ} g_wᵀg_0 + c‖g_0‖‖g_w‖ on the Gramian, and λ = c‖g_0‖/‖g_w*‖ (0 when c‖g_0‖ = 0)."""
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    t = g.shape[0]
    g = g / max(float(np.diag(g).max()), np.finfo(float).tiny)  # largest ‖g_t‖ is 1 now
    uniform = np.full(t, 1.0 / t)
    linear = g @ uniform  # (g_tᵀg_0)_t
    s = c * math.sqrt(max(float(uniform @ linear), 0.0))  # √φ = c‖g_0‖
    if s <= 0.0:
        return CAGradDual(torch.from_numpy(uniform), 0.0, True, False)
    w_hi, q_hi, ok_hi = _qp_at(g, linear, s, 1.0, None)  # the root τ* = ‖g_w*‖ ≤ max_t ‖g_t‖ = 1
    w_lo, q_lo, ok_lo = _qp_at(g, linear, s, MIN_TAU, w_hi)
    if q_lo <= MIN_TAU:
        return CAGradDual(torch.from_numpy(w_lo), s / MIN_TAU, ok_hi and ok_lo, True)
    tau, w, ok = _root(g, linear, s, (MIN_TAU, 1.0), w_hi, q_hi)
    return CAGradDual(torch.from_numpy(w), s / tau, ok_hi and ok_lo and ok, False)


def _root(
    gram: np.ndarray, linear: np.ndarray, s: float, bracket: tuple[float, float], w_hi: np.ndarray, q_hi: float
) -> tuple[float, np.ndarray, bool]:
    """τ with τ = ‖g_{w(τ)}‖, from lo, hi with ‖g_{w(lo)}‖ > lo and ‖g_{w(hi)}‖ ≤ hi; returns hi's side."""
    lo, hi = bracket
    converged, slow = True, False
    for _ in range(ROOT_MAX_ITER):
        if hi - q_hi <= ROOT_RTOL * hi or hi - lo <= ROOT_RTOL * hi:
            return hi, w_hi, converged
        # fixed-point step τ ← ‖g_{w(τ)}‖ (lands in [τ*, hi]); a bisection after a slow one
        fixed_point = not slow and lo < q_hi < hi
        tau = q_hi if fixed_point else math.sqrt(lo * hi)  # geometric: τ* may be orders below hi
        w, q, ok = _qp_at(gram, linear, s, tau, w_hi)
        converged = converged and ok
        if q <= tau:
            slow = fixed_point and tau - q > 0.5 * (hi - q_hi)
            hi, w_hi, q_hi = tau, w, q
        else:
            lo, slow = tau, False
    return hi, w_hi, False


def dual_coefficients(dual: CAGradDual) -> torch.Tensor:
    """α (T,) with d* = Σ_t α_t g_t = g_0 + λ g_w*: α = 1/T + λ w*."""
    t = dual.w.shape[0]
    return torch.full((t,), 1.0 / t, dtype=torch.float64) + dual.lam * dual.w


def cagrad_coefficients(gram: torch.Tensor, c: float) -> torch.Tensor:
    """α (T,) of CAGrad's direction d* = Σ_t α_t g_t for the Gramian `gram`."""
    return dual_coefficients(solve_cagrad_dual(gram, c))


def rescale_factor(c: float, rescale: str) -> float:
    """The authors' final division of d: 1 + c², 1 + c, or 1."""
    if rescale == "1+c^2":
        return 1.0 + c * c
    if rescale == "1+c":
        return 1.0 + c
    if rescale == "none":
        return 1.0
    raise ValueError(f"unknown CAGrad rescale {rescale!r}; valid: {', '.join(RESCALES)}")


@register_method("cagrad")
class CAGrad(GramianMethod):
    """CAGrad on the shared parameters' gradients; weights T (1/T + λ w*) / rescale."""

    description = "CAGrad (Liu et al. 2021): best worst-task gain within c‖g0‖ of the mean gradient."
    event_names = ("pareto_stationary_steps", "solver_not_converged_steps")

    def gramian_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """k·α/rescale for the k usable tasks (k = T unless some gradients were left out)."""
        p = self.params
        dual = solve_cagrad_dual(gram, p.c)
        self.events_["pareto_stationary_steps"] += int(dual.pareto_stationary)
        self.events_["solver_not_converged_steps"] += int(not dual.converged)
        return gram.shape[0] * dual_coefficients(dual) / rescale_factor(p.c, p.rescale)
