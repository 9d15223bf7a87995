"""Shared pieces of the gradient methods written as task weights from the T×T Gramian.

MGDA, PCGrad and CAGrad only ever need the inner products of the task gradients: each picks
weights w ∈ R^T from G = J Jᵀ (J the (T, P) Jacobian of `ctx.grads`) and the shared update is
w @ J = Σ_t w_t g_t. This module holds what they share:

* `gramian`: G in float64 on the CPU (one host transfer of T² numbers per step);
* `screen_rows`: which task gradients are usable (finite, non-zero); the others are left out of
  the step (weight 0), so a NaN never reaches the update and a zero gradient (no direction to
  protect) does not make MGDA's min-norm point 0 and freeze the trunk;
* `combine`: w @ J over the usable rows;
* `simplex_qp`: min ½ wᵀHw + bᵀw over the probability simplex, by Frank–Wolfe with away steps
  and exact line search (Lacoste-Julien & Jaggi, NeurIPS 2015), with an exact solve on the
  current support (Wolfe's minor cycle) every few iterations to remove Frank–Wolfe's slow tail;
* `GramianMethod`: the `step` every such method shares, with the guard counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from mtlbench.methods.base import GradientNeed, Method, StepContext, StepOutput

ZERO_GRADIENT_RTOL = 1e-20  # ‖g_t‖² at most this × the largest ‖g‖² counts as a zero gradient
QP_RTOL = 1e-13  # Frank–Wolfe gap, relative to the problem's largest coefficient
QP_MAX_ITER = 1000
QP_POLISH_EVERY = 8


def gramian(jacobian: torch.Tensor) -> torch.Tensor:
    """G = J Jᵀ (T, T), computed where J lives in IEEE float32 (never TF32, whose 10-bit mantissa
    could flip the sign of a small inner product), returned in float64 on the CPU."""
    matmul = torch.backends.cuda.matmul
    tf32 = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        return (jacobian @ jacobian.T).to(device="cpu", dtype=torch.float64)
    finally:
        matmul.allow_tf32 = tf32


@dataclass(frozen=True)
class RowScreen:
    """Which task gradients a step can use, and why the others were left out."""

    active: torch.Tensor  # (T,) bool
    nonfinite: int  # rows with NaN/inf entries (their ‖g‖² is not finite)
    zero: int  # finite rows with (numerically) zero norm


def screen_rows(gram: torch.Tensor) -> RowScreen:
    """Usable rows of the Jacobian, judged from the Gramian's diagonal ‖g_t‖².

    A NaN or inf anywhere in g_t makes ‖g_t‖² non-finite; a finite row cannot make another
    row's inner products non-finite (|g_iᵀg_j| ≤ ‖g_i‖‖g_j‖), so the diagonal suffices.
    """
    sq_norms = gram.diagonal()
    finite = torch.isfinite(sq_norms)
    largest = sq_norms[finite].max() if bool(finite.any()) else sq_norms.new_zeros(())
    zero = finite & (sq_norms <= ZERO_GRADIENT_RTOL * largest)
    return RowScreen(active=finite & ~zero, nonfinite=int((~finite).sum()), zero=int(zero.sum()))


def combine(weights: torch.Tensor, jacobian: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Σ_t w_t g_t over the active rows only (0 · NaN would be NaN), in J's dtype and device."""
    w = weights.to(device=jacobian.device, dtype=jacobian.dtype)
    if bool(active.all()):
        return w @ jacobian
    rows = active.nonzero().squeeze(1).to(jacobian.device)
    return w[rows] @ jacobian[rows]


def simplex_qp(
    hessian: np.ndarray,
    linear: np.ndarray,
    start: np.ndarray | None = None,
    rtol: float = QP_RTOL,
    max_iter: int = QP_MAX_ITER,
) -> tuple[np.ndarray, bool]:
    """argmin over the simplex of ½ wᵀHw + bᵀw (H symmetric PSD), and whether it converged.

    Away-step Frank–Wolfe with exact line search; stops when the Frank–Wolfe gap
    max_i ∇f(w)ᵀ(w − e_i), an upper bound on f(w) − f*, is at most `rtol` × the largest
    |coefficient| of the problem. Every few iterations the problem restricted to the current
    support is solved exactly (`_support_polish`) and taken if it is better.
    """
    n = linear.shape[0]
    if n == 1:
        return np.ones(1), True
    tol = rtol * max(float(np.abs(hessian).max()), float(np.abs(linear).max()), np.finfo(float).tiny)
    w = _start_vertex(hessian, linear) if start is None else start.copy()
    for it in range(max_iter):
        grad = hessian @ w + linear
        toward = int(np.argmin(grad))
        fw_gap = float(grad @ w - grad[toward])
        if fw_gap <= tol:
            return w, True
        if it % QP_POLISH_EVERY == QP_POLISH_EVERY - 1:
            polished = _support_polish(hessian, linear, w)
            if _qp_value(hessian, linear, polished) < _qp_value(hessian, linear, w):
                w = polished
                continue
        w = _away_step(hessian, w, grad, toward, fw_gap)
    return w, False


def _start_vertex(hessian: np.ndarray, linear: np.ndarray) -> np.ndarray:
    w = np.zeros(linear.shape[0])
    w[int(np.argmin(0.5 * np.diag(hessian) + linear))] = 1.0
    return w


def _qp_value(hessian: np.ndarray, linear: np.ndarray, w: np.ndarray) -> float:
    return float(0.5 * w @ hessian @ w + linear @ w)


def _away_step(hessian: np.ndarray, w: np.ndarray, grad: np.ndarray, toward: int, fw_gap: float) -> np.ndarray:
    """One Frank–Wolfe or away step (whichever has the larger gap) with exact line search."""
    support = np.flatnonzero(w > 0)
    away = int(support[np.argmax(grad[support])])
    away_gap = float(grad[away] - grad @ w)
    if fw_gap >= away_gap or w[away] >= 1.0:
        direction = -w.copy()
        direction[toward] += 1.0
        max_step, drop = 1.0, None
    else:
        direction = w.copy()
        direction[away] -= 1.0
        max_step, drop = w[away] / (1.0 - w[away]), away
    curvature = float(direction @ hessian @ direction)
    slope = float(direction @ grad)
    step = max_step if curvature <= 0 else min(max(-slope / curvature, 0.0), max_step)
    w = w + step * direction
    if drop is not None and step >= max_step:
        w[drop] = 0.0
    w = np.maximum(w, 0.0)
    return w / w.sum()


def _support_polish(hessian: np.ndarray, linear: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Wolfe's minor cycle: toward the minimizer on the affine hull of supp(w), dropping vertices.

    v minimizes f over {v: Σv = 1, v = 0 off the support} (KKT system, least squares when the
    support is affinely dependent). If v ≥ 0 it is the answer; otherwise f decreases from w to v,
    so move to where the segment leaves the simplex, drop the vertex that hit 0, and repeat.
    """
    w = w.copy()
    while True:
        support = np.flatnonzero(w > 0)
        v = _affine_minimizer(hessian, linear, support)
        if v is None:
            return w
        if np.all(v >= 0):
            out = np.zeros_like(w)
            out[support] = v / v.sum()
            return out
        current = w[support]
        leaving = v < 0
        ratios = current[leaving] / (current[leaving] - v[leaving])
        theta = float(ratios.min())
        moved = current + theta * (v - current)
        moved[np.flatnonzero(leaving)[np.argmin(ratios)]] = 0.0
        w[support] = np.maximum(moved, 0.0)
        w /= w.sum()


def _affine_minimizer(hessian: np.ndarray, linear: np.ndarray, support: np.ndarray) -> np.ndarray | None:
    k = support.shape[0]
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = hessian[np.ix_(support, support)]
    kkt[:k, k] = kkt[k, :k] = 1.0
    rhs = np.zeros(k + 1)
    rhs[:k], rhs[k] = -linear[support], 1.0
    v = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:k]
    if not np.all(np.isfinite(v)) or abs(v.sum() - 1.0) > 1e-9:
        return None
    return v


class GramianMethod(Method):
    """A gradient method whose shared update is Σ_t w_t g_t, w computed from the Gramian.

    Subclasses implement `gramian_weights` on the usable tasks only; this class computes G once,
    leaves NaN/inf and zero gradients out of the step (weight 0, counted), and returns
    `shared_grad = w @ J` with the weights that produced it.
    """

    needs: ClassVar[GradientNeed] = "shared_params"
    event_names: ClassVar[tuple[str, ...]] = ()

    def prepare(self) -> None:
        """The guard counters of every Gramian method, and the method's own `event_names`."""
        base = ("nonfinite_grad_rows", "zero_grad_rows", "no_usable_task_steps", "nonfinite_update_steps")
        self.events_: dict[str, int] = {name: 0 for name in base + self.event_names}

    def gramian_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """Weights (k,) of the k usable tasks from their Gramian (k, k) and losses (k,), float64."""
        raise NotImplementedError

    def usable_tasks(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """(T,) bool: tasks whose gradient enters this step (subclasses may leave out more)."""
        screen = screen_rows(gram)
        self.events_["nonfinite_grad_rows"] += screen.nonfinite
        self.events_["zero_grad_rows"] += screen.zero
        return screen.active

    def step(self, ctx: StepContext) -> StepOutput:
        """G once, weights of the usable tasks, shared gradient w @ J."""
        if ctx.grads is None:
            raise ValueError(f"{type(self).__name__} needs per-task gradients ({self.needs}) in ctx.grads")
        jacobian = ctx.grads
        gram = gramian(jacobian)
        losses = ctx.losses.detach().to(device="cpu", dtype=torch.float64)
        active = self.usable_tasks(gram, losses)
        weights = torch.zeros(self.num_tasks, dtype=torch.float64)
        if bool(active.any()):
            rows = active.nonzero().squeeze(1)
            weights[rows] = self.gramian_weights(gram[rows][:, rows], losses[rows])
        else:
            self.events_["no_usable_task_steps"] += 1
        shared = combine(weights, jacobian, active)
        if not (bool(torch.isfinite(weights).all()) and bool(torch.isfinite(shared).all())):
            self.events_["nonfinite_update_steps"] += 1
            weights, shared = torch.zeros_like(weights), torch.zeros_like(shared)
        return StepOutput(weights=weights.to(device=ctx.losses.device, dtype=ctx.losses.dtype), shared_grad=shared)

    def weights_changed_per_step(self) -> bool:
        """Always: the weights are recomputed from each step's gradients."""
        return True

    def diagnostics(self) -> dict[str, float]:
        """Guard counters: rows left out (NaN/inf, zero), steps with no usable task or a bad update."""
        return {name: float(count) for name, count in self.events_.items()}
