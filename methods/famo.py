"""FAMO: Fast Adaptive Multitask Optimization, an O(1)-per-step dynamic loss weighting.

Liu, Liu, Jin, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023
(Algorithm 1), checked against the authors' code (github.com/Cranial-XIX/FAMO, `famo.py` and
`methods/weight_methods.py`). With task logits ξ (initialised to 0) and z = softmax(ξ):

* model step: θ ← θ − α Σ_i c·(z_i / ℓ_i)·∇ℓ_i,  c = (Σ_i z_i / ℓ_i)⁻¹, i.e. the gradient of
  the objective  c·Σ_i z_i·log ℓ_i  with c held constant. ℓ_i is the loss minus its minimum
  ℓ_i*, which is 0 for cross-entropy; losses are floored at ε = 1e-8 before the log.
* logit step: δ_i = log ℓ_i(before) − log ℓ_i(after) and
  ξ ← ξ − β·(J_z(ξ)ᵀ δ + γ·ξ),  where J_z(ξ)ᵀ δ = z ⊙ (δ − zᵀδ) (softmax's vector-Jacobian
  product). Algorithm 1 writes this as a plain gradient step; the practical version (the
  paper's Appendix C) and the authors' code feed J_zᵀδ to Adam(lr = β, weight_decay = γ),
  which adds γ·ξ to the gradient before Adam's normalisation. Default `logit_optimizer =
  "adam"` as released (β = 0.025, Adam betas (0.9, 0.999), eps 1e-8); "sgd" is Algorithm 1 as
  written (with β = 0.025 and per-step δ of order 1e-3, ξ then barely moves). γ = 0.001 as in
  Appendix C and the authors' QM9 script (their CelebA script and `famo.py` use 0.01).

What the method returns: the objective c·Σ_i z_i·log ℓ_i (faithful to the paper; its value is
not Σ w L, but its gradient is Σ w ∇L) and, as weights, the factors on ∇ℓ_i it applies,
w_i = c·z_i / ℓ_i (detached). c makes them sum to 1 (a convex combination of the task
gradients, as in the paper), against T for equal weighting: the gradient is ~1/T as large,
which Adam-type optimizers largely absorb. The contract has no "sum-to-1", so normalization
is "none". FAMO's own task weights z = softmax(ξ) are `self.task_weights()`.

Deviations from the original:

* (forced by the trainer's one-forward-per-step contract) the original updates ξ right after the model step with the same batch's losses
  re-evaluated at the new parameters (an extra forward). Here δ uses the next step's losses,
  i.e. a different batch: δ_i = log ℓ_i(batch k−1, θ_{k−1}) − log ℓ_i(batch k, θ_k). ξ is
  updated at the start of step k, before z is used, so the schedule is the original's (step k
  uses ξ after k−1 updates); δ is noisier (batch-to-batch variation) but costs nothing.
* no gradient clipping: the authors' experiment code (`methods/weight_methods.py`) calls
  clip_grad_norm_(shared, 1.0) before loss.backward(), where it clips nothing, while the
  standalone `famo.py` clips after it; the trainer's protocol is the same for every method.
* floor: max(ℓ, ε) instead of the code's ℓ + ε (they differ by at most ε for positive losses).

Guard: if a loss of either step in δ is not finite or not positive, the logit update is
skipped (ξ and the Adam state unchanged) and counted in `diagnostics()`. The check runs on
the device, without a host sync per step.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from mtlbench.methods.base import Method, StepContext, StepOutput
from mtlbench.methods.params import FAMOParams
from mtlbench.registry import register_method

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as in the authors' code
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class LogitState:
    """The logits ξ and their optimizer state (Adam moments, update count), all float64."""

    xi: torch.Tensor
    m: torch.Tensor
    v: torch.Tensor
    t: torch.Tensor

    @classmethod
    def zeros(cls, num_tasks: int) -> "LogitState":
        """ξ = 0 with fresh optimizer state."""
        z = torch.zeros(num_tasks, dtype=torch.float64)
        return cls(z, z.clone(), z.clone(), torch.zeros((), dtype=torch.float64))

    def to(self, device: torch.device) -> "LogitState":
        """The same state on `device`."""
        return LogitState(*(getattr(self, f.name).to(device) for f in fields(self)))


def select_state(keep_new: torch.Tensor, new: LogitState, old: LogitState) -> LogitState:
    """`new` where the 0-dim bool `keep_new` is true, else `old` (no host sync)."""
    return LogitState(*(torch.where(keep_new, getattr(new, f.name), getattr(old, f.name)) for f in fields(new)))


def softmax_vjp(xi: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """J_z(ξ)ᵀ δ for z = softmax(ξ): z ⊙ (δ − zᵀδ)."""
    z = torch.softmax(xi, dim=0)
    return z * (delta - (z * delta).sum())


def logit_step(state: LogitState, delta: torch.Tensor, params: FAMOParams) -> LogitState:
    """One FAMO logit update from the log-loss decrease δ (Adam as released, or plain SGD)."""
    grad = softmax_vjp(state.xi, delta) + params.gamma * state.xi
    t = state.t + 1
    if params.logit_optimizer == "sgd":
        return LogitState(state.xi - params.beta * grad, state.m, state.v, t)
    b1, b2 = ADAM_BETAS
    m = b1 * state.m + (1 - b1) * grad
    v = b2 * state.v + (1 - b2) * grad * grad
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    return LogitState(state.xi - params.beta * m_hat / (v_hat.sqrt() + ADAM_EPS), m, v, t)


def usable(losses: torch.Tensor) -> torch.Tensor:
    """0-dim bool: every loss finite and positive (so log ℓ is meaningful)."""
    return (torch.isfinite(losses) & (losses > 0)).all()


def safe_losses(losses: torch.Tensor, eps: float) -> torch.Tensor:
    """max(ℓ, ε), with non-finite losses replaced by 1 (only ever used where harmless)."""
    return torch.where(torch.isfinite(losses), losses, torch.ones_like(losses)).clamp_min(eps)


def famo_weights(z: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """The factors on ∇ℓ_i of FAMO's model step: c·z_i/ℓ_i with c = (Σ_j z_j/ℓ_j)⁻¹."""
    return z / (losses * (z / losses).sum())


def famo_objective(z: torch.Tensor, losses: torch.Tensor, floor: torch.Tensor, eps: float) -> torch.Tensor:
    """c·Σ_i z_i·log max(ℓ_i, ε) with c = (Σ_j z_j/floor_j)⁻¹ held constant (floor detached)."""
    c = 1.0 / (z / floor).sum()
    return c * (z * torch.log(losses.clamp_min(eps))).sum()


@register_method("famo")
class FAMO(Method):
    """Softmax task logits updated each step from the change in log-losses; log-loss objective."""

    description = "FAMO (Liu et al., NeurIPS 2023): balanced log-loss decrease, O(1) logit update per step."
    normalization = "none"
    Params = FAMOParams

    def __init__(self, task_names, params=None, *, generator=None):
        super().__init__(task_names, params, generator=generator)  # checks the hyperparameters
        self.state_ = LogitState.zeros(self.num_tasks)
        self.prev_log_: torch.Tensor | None = None  # log max(ℓ, ε) of the previous step
        self.prev_ok_ = torch.zeros((), dtype=torch.bool)
        self.skipped_ = torch.zeros((), dtype=torch.long)

    def to(self, device: torch.device) -> "FAMO":
        """Keep all state on the losses' device (no per-step transfers or syncs)."""
        self.state_ = self.state_.to(device)
        self.prev_log_ = None if self.prev_log_ is None else self.prev_log_.to(device)
        self.prev_ok_ = self.prev_ok_.to(device)
        self.skipped_ = self.skipped_.to(device)
        return self

    def task_weights(self) -> torch.Tensor:
        """FAMO's task weights z = softmax(ξ) (on the simplex)."""
        return torch.softmax(self.state_.xi, dim=0)

    def observe(self, losses: torch.Tensor) -> None:
        """Update ξ from the previous and these losses (guarded), then remember these."""
        current = losses.detach().double()
        ok_now = usable(current)
        log_now = torch.log(safe_losses(current, self.params.eps))
        if self.prev_log_ is not None:
            ok = self.prev_ok_ & ok_now
            updated = logit_step(self.state_, self.prev_log_ - log_now, self.params)
            self.state_ = select_state(ok, updated, self.state_)
            self.skipped_ = self.skipped_ + (~ok).long()
        self.prev_log_, self.prev_ok_ = log_now, ok_now

    def step(self, ctx: StepContext) -> StepOutput:
        """Update ξ with the loss change since the last step, then the objective c·Σ z log ℓ."""
        self.observe(ctx.losses)
        z = self.task_weights().to(ctx.losses.dtype)
        floor = safe_losses(ctx.losses.detach(), self.params.eps)
        objective = famo_objective(z, ctx.losses, floor, self.params.eps)
        return StepOutput(weights=famo_weights(z, floor), objective=objective)

    def weights_changed_per_step(self) -> bool:
        """Always: ξ and the losses change every step."""
        return True

    def diagnostics(self) -> dict[str, float]:
        """Logit updates made and skipped (a non-finite or non-positive loss in δ)."""
        return {"logit_updates": float(self.state_.t.item()), "skipped_logit_updates": float(self.skipped_.item())}

