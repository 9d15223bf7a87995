"""FairGrad: the shared update as an α-fair allocation of progress among the tasks.

Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024. The update d = Σ_t w_t g_t
maximizes Σ_t u_t^{1−α}/(1−α) of the tasks' progress u_t = g_tᵀd (log u_t for α = 1) within a
ball; its optimality condition (the paper's eq. 4 and Algorithm 1) fixes the weights by

    G w = w^{−1/α}   (elementwise, w > 0),   G = J Jᵀ the Gramian,

i.e. each task's progress g_tᵀd = (G w)_t equals w_t^{−1/α}. α = 1 is proportional fairness (G w = 1/w,
the Nash-MTL weights), α → ∞ approaches max-min fairness.

The equation is the stationarity condition of the strictly convex φ(w) = ½ wᵀGw − Σ_t F(w_t) with
F′(w) = w^{−1/α} (F = log for α = 1), so its root is unique when it exists, and it is found here by
damped Newton steps on φ (`alpha_fair_weights`), on G scaled to unit largest diagonal (the root
scales as s^{−α/(α+1)} when G scales by s). The authors solve the same equation with
`scipy.optimize.least_squares(G w − w^{−1/α}, x0 = 1/T, bounds (0, ∞))`
(OptMN-Lab/fairgrad@2b8cba1e3d070583ee1d00f8fc0ccc9bc4695c50 methods/weight_methods.py lines 811-825):
the same root, in well under a millisecond for 14 tasks (least_squares: about 10 ms). No root
exists when 0 is in the convex hull of the gradients (e.g. g and −g: (G w)_1 = −(G w)_2): then
least_squares stops at an iterate on its way to infinity; here such a step (Newton not converged)
is counted ("solver_not_converged_steps") and leaves the trunk unchanged (weights 0), the limit of
that drift in the two-task case.

Scale, as in the authors' code: the update is multiplied by T "to match the sum loss"
(weight_methods.py line 845) and its norm clipped to `max_norm` (torch's clip_grad_norm_,
max_norm / (‖d‖ + 1e-6); lines 870-871, default 1.0 from experiments/utils.py line 75). The norm is
read off the Gramian, ‖Σ_t w_t g_t‖ = √(wᵀGw). The applied weights are T·w·clip; they do not sum
to T (weight_scale "none"). Default α = 2.0, the value of every experiment script of the authors
(experiments/celeba/run.sh line 5; cityscapes, nyuv2, quantum_chemistry likewise).

Deviations: the solver (same root, Newton instead of least_squares); a step without a root gives
weights 0 instead of least_squares' last iterate; task heads receive their own losses' gradients
(the harness contract, also the authors').
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mtlbench.methods.gramian import GramianMethod
from mtlbench.registry import register_method

NEWTON_RTOL = 1e-13  # |(Gw)_t − w_t^(−1/α)| relative to the size of its terms
NEWTON_MAX_ITER = 200
RESOLVABLE = 1e-10  # smallest progress (G w)_t relative to Σ_s |G_ts| w_s that a root may have
ARMIJO = 0.25
FULL_STEP_DECREMENT = 1e-8  # Newton decrement λ² = −∇φᵀΔ below which the full step is taken
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s max_norm / (norm + 1e-6)


def _concave_utility(w: np.ndarray, alpha: float) -> float:
    """Σ_t F(w_t), F′(w) = w^(−1/α)."""
    if alpha == 1.0:
        return float(np.log(w).sum())
    power = 1.0 - 1.0 / alpha
    return float((w**power).sum() / power)


def _objective(gram: np.ndarray, w: np.ndarray, alpha: float) -> float:
    return 0.5 * float(w @ gram @ w) - _concave_utility(w, alpha)


def _solved(gram: np.ndarray, w: np.ndarray, alpha: float) -> bool:
    """Every equation holds to rounding, and no task's progress is lost in the cancellation of (G w)_t
    (which is how the iterates run off to infinity when there is no root)."""
    inverse_power = w ** (-1.0 / alpha)
    magnitude = np.abs(gram) @ w
    accurate = np.abs(gram @ w - inverse_power) <= NEWTON_RTOL * (magnitude + inverse_power)
    return bool(np.all(accurate & (inverse_power >= RESOLVABLE * magnitude)))


def _newton_step(gram: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """w after one damped Newton step on φ(w) = ½ wᵀGw − Σ F(w_t), kept > 0."""
    inverse_power = w ** (-1.0 / alpha)
    residual = gram @ w - inverse_power  # ∇φ
    hessian = gram + np.diag(inverse_power / (alpha * w))  # G + diag(w^(−1/α−1)/α), positive definite
    direction = np.linalg.solve(hessian, -residual)
    t = 1.0
    shrinking = direction < 0
    if np.any(shrinking):  # stay inside w > 0, at most 99% of the way to the boundary
        t = min(1.0, 0.99 * float(np.min(-w[shrinking] / direction[shrinking])))
    start, slope = _objective(gram, w, alpha), float(residual @ direction)
    if -slope <= FULL_STEP_DECREMENT and t == 1.0:  # quadratic phase: φ's decrease is below its rounding
        return w + direction
    while t > 1e-12 and _objective(gram, w + t * direction, alpha) > start + ARMIJO * t * slope:
        t *= 0.5
    return w + t * direction


def alpha_fair_weights(gram: torch.Tensor, alpha: float) -> tuple[torch.Tensor, bool]:
    """The root w > 0 of G w = w^(−1/α) (float64), and whether it was found."""
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    scale = max(float(np.diag(g).max()), np.finfo(float).tiny)
    g = g / scale
    w = np.diag(g).clip(min=np.finfo(float).tiny) ** (-alpha / (alpha + 1.0))  # the root if G were diagonal
    converged = False
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # a run-off ends as inf or a singular H
        for _ in range(NEWTON_MAX_ITER):
            if not np.all(np.isfinite(w)) or _solved(g, w, alpha):
                converged = bool(np.all(np.isfinite(w)))
                break
            try:
                w = _newton_step(g, w, alpha)
            except np.linalg.LinAlgError:
                break
    return torch.from_numpy(w * scale ** (-alpha / (alpha + 1.0))), converged


def clip_factor(weights: torch.Tensor, gram: torch.Tensor, max_norm: float) -> float:
    """torch's clip_grad_norm_ factor min(1, max_norm / (‖Σ w_t g_t‖ + 1e-6)) from the Gramian; 1 if max_norm is 0."""
    if max_norm <= 0:
        return 1.0
    norm = math.sqrt(max(float(weights @ gram.to(weights) @ weights), 0.0))
    return min(1.0, max_norm / (norm + CLIP_EPS))


@register_method("fairgrad")
class FairGrad(GramianMethod):
    """FairGrad on the shared parameters' gradients; weights T·w·clip with G w = w^(−1/α)."""

    description = "FairGrad (Ban & Ji 2024): α-fair weights G w = w^(−1/α); ×T, update clipped to max_norm."
    event_names = ("solver_not_converged_steps", "clipped_steps")

    def gramian_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """T·w·clip for the usable tasks; 0 where G w = w^(−1/α) has no root."""
        w, converged = alpha_fair_weights(gram, self.params.alpha)
        if not converged:
            self.events_["solver_not_converged_steps"] += 1
            return torch.zeros_like(w)
        scaled = self.num_tasks * w
        factor = clip_factor(scaled, gram, self.params.max_norm)
        self.events_["clipped_steps"] += int(factor < 1.0)
        return scaled * factor
