"""FAMO: Fast Adaptive Multitask Optimization, an O(1)-per-step dynamic loss weighting.

Liu, Liu, Jin, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023
(Algorithm 1), checked against the authors' code (github.com/Cranial-XIX/FAMO, `famo.py` and
`methods/weight_methods.py`). With task logits ξ (initialised to 0) and z = softmax(ξ):

* model step: θ ← θ − α Σ_i c·(z_i / ℓ_i)·∇ℓ_i,  c = (Σ_i z_i / ℓ_i)⁻¹, i.e. the gradient of
  the objective  c·Σ_i z_i·log ℓ_i  with c held constant. ℓ_i is the loss minus its minimum
  ℓ_i*, which is 0 for cross-entropy; losses are floored at ε = 1e-8 before the log.
* logit step, after the model step, on the same batch: δ_i = log ℓ_i(θ_k) − log ℓ_i(θ_{k+1})
  (one extra forward, no gradient) and ξ ← ξ − β·(J_z(ξ)ᵀ δ + γ·ξ), where
  J_z(ξ)ᵀ δ = z ⊙ (δ − zᵀδ) (softmax's vector-Jacobian product). Algorithm 1 writes this as a
  plain gradient step; the practical version (the paper's Appendix C) and the authors' code
  feed J_zᵀδ to Adam(lr = β, weight_decay = γ), which adds γ·ξ to the gradient before Adam's
  normalisation. Default `logit_optimizer = "adam"` as released (Adam betas (0.9, 0.999),
  eps 1e-8); "sgd" is Algorithm 1 as written.

Defaults from the authors' closest setting, multi-label CelebA (40 binary tasks):
experiments/celeba/run.sh at commit 0a6ad06 passes --gamma=0.001 (γ; changed from 0.01 in
135d87e), and experiments/utils.py's --method-params-lr 0.025 is β. Their trainer
(experiments/celeba/trainer.py, lines 101–106) calls optimizer.step() and then, under
torch.no_grad() with the model still in train() mode, re-runs the forward on the same input and
passes the new per-task losses to `update`: BatchNorm uses the batch's statistics and updates its
running statistics a second time. `famo` does the same through the trainer's re-evaluation hook
(`Method.after_update`), and the extra forward is counted in the method's time.

What the method returns: the objective c·Σ_i z_i·log ℓ_i (faithful to the paper; its value is
not Σ w L, but its gradient is Σ w ∇L) and, as weights, the factors on ∇ℓ_i it applies,
w_i = c·z_i / ℓ_i (detached). c makes them sum to 1 (a convex combination of the task
gradients, as in the paper), against T for equal weighting: the gradient is ~1/T as large,
which Adam-type optimizers largely absorb. The contract has no "sum-to-1", so weight_scale
is "none". FAMO's own task weights z = softmax(ξ) are `self.task_weights()`.

`famo-nextbatch` is an approximation, not the authors' method: it saves the extra forward by
taking δ from consecutive steps, δ_i = log ℓ_i(batch k−1, θ_{k−1}) − log ℓ_i(batch k, θ_k), and
updates ξ at the start of step k, before z is used (so step k uses ξ after k−1 updates, as in
the original's schedule). That δ mixes the loss decrease with batch-to-batch variation, which
dominates it: on the default data (benchmarks/famo_delta.py, docs/famo_delta_cpu.md: quick
preset, 65 steps) its standard deviation is 3.4–18.8× (median 10.9×) the same-batch δ's, and the
two correlate at −0.11 to +0.10 per task. It is what `famo` meant before version 2 of this method.

Deviations from the original (both variants):

* no gradient clipping: the authors' experiment code (`methods/weight_methods.py`) calls
  clip_grad_norm_(shared, 1.0) before loss.backward(), where it clips nothing, while the
  standalone `famo.py` clips after it; the trainer's protocol is the same for every method.
* floor: max(ℓ, ε) instead of the code's ℓ + ε (they differ by at most ε for positive losses).

Missing labels: a task without a labelled image in the batch has no loss, and its 0 floored at ε would
take nearly all of c. Such a step is FAMO's on the T' present tasks: weight 0 and no objective term for an
absent task, z renormalised over the present ones by c; the logit step takes δ, z and J_zᵀδ over the tasks
with a loss on both sides of δ (for `famo` the same batch's present tasks; for `famo-nextbatch` those present
at both steps) and leaves every other task's logit and Adam moments as they were.

Guard: if a loss of either side of δ is not finite or not positive, the logit update is skipped
(ξ and the Adam state unchanged) and counted in `diagnostics()`. The check runs on the device,
without a host sync per step; that is why the logits' Adam is written out here (torch.optim.Adam
would need the guard's value on the host to skip a step). Its state is the module's buffers.
"""

from __future__ import annotations

import math
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


def softmax_vjp(xi: torch.Tensor, delta: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
    """J_z(ξ)ᵀ δ for z = softmax(ξ): z ⊙ (δ − zᵀδ); with `present`, z is the softmax over the present tasks
    (0 elsewhere, and δ must be 0 there): the vector-Jacobian product of the T'-task problem."""
    z = torch.softmax(xi if present is None else torch.where(present, xi, torch.full_like(xi, -math.inf)), dim=0)
    return z * (delta - (z * delta).sum())


def logit_step(
    state: LogitState, delta: torch.Tensor, params: FAMOParams, present: torch.Tensor | None = None
) -> LogitState:
    """One FAMO logit update from the log-loss decrease δ (Adam as released, or plain SGD); with `present`,
    the update of the present tasks' logits (the caller keeps the others' state)."""
    grad = softmax_vjp(state.xi, delta, present) + params.gamma * state.xi
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


def usable_present(losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """0-dim bool: some task is present, and every present task's loss is finite and positive."""
    return ((torch.isfinite(losses) & (losses > 0)) | ~present).all() & present.any()


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


class _FAMOLogits(Method):
    """What both FAMO variants share: the logits ξ with their Adam state (buffers), z = softmax(ξ),
    the guarded logit step and its counters."""

    def setup(self) -> None:
        # ξ and its hand-written Adam moments live on the losses' device: torch.optim.Adam cannot
        # skip a guarded update without reading the guard on the host (a sync every step).
        zeros = LogitState.zeros(self.num_tasks)
        for f in fields(LogitState):
            self.register_buffer(f"{f.name}_", getattr(zeros, f.name))
        self.register_buffer("skipped_", torch.zeros((), dtype=torch.long))

    def logit_state(self) -> LogitState:
        """ξ and its optimizer state as one value."""
        return LogitState(*(getattr(self, f"{f.name}_") for f in fields(LogitState)))

    def set_logit_state(self, state: LogitState) -> None:
        """Write `state` into the buffers (in place: device and dtype kept)."""
        for f in fields(LogitState):
            getattr(self, f"{f.name}_").copy_(getattr(state, f.name))

    def task_weights(self) -> torch.Tensor:
        """FAMO's task weights z = softmax(ξ) (on the simplex)."""
        return torch.softmax(self.xi_, dim=0)

    def logit_update(
        self,
        log_before: torch.Tensor,
        log_after: torch.Tensor,
        ok: torch.Tensor,
        counts: torch.Tensor | bool = True,
        present: torch.Tensor | None = None,
    ) -> None:
        """ξ ← one logit step on δ = log_before − log_after where the 0-dim bool `ok` holds;
        a refused step (where `counts`) is counted as skipped. No host sync.

        With `present` (missing labels: the tasks with a loss on both sides of δ) the step is the T'-task
        problem's: z and J_zᵀδ over the present tasks, whose logits and Adam moments move; an absent task's
        logit and moments are left as they are. The update count t is shared (it counts the logit steps made),
        so an absent task's bias correction runs ahead of its own moments, a small early-training effect."""
        state = self.logit_state()
        if present is None:
            self.set_logit_state(select_state(ok, logit_step(state, log_before - log_after, self.params), state))
        else:
            delta = torch.where(present, log_before - log_after, torch.zeros_like(log_before))
            new, moves = logit_step(state, delta, self.params, present), ok & present
            self.set_logit_state(
                LogitState(
                    torch.where(moves, new.xi, state.xi),
                    torch.where(moves, new.m, state.m),
                    torch.where(moves, new.v, state.v),
                    torch.where(ok, new.t, state.t),
                )
            )
        self.skipped_ = self.skipped_ + (counts & ~ok).long()

    def objective_and_weights(self, losses: torch.Tensor, present: torch.Tensor | None = None) -> StepOutput:
        """The objective c·Σ z log ℓ and the factors c·z_i/ℓ_i it puts on ∇ℓ_i, at the current ξ; over the
        `present` tasks where given (an absent task's 0 would be floored at ε and take every weight)."""
        if present is not None:
            return self.present_objective_and_weights(losses, present)
        z = self.task_weights().to(losses.dtype)
        floor = safe_losses(losses.detach(), self.params.eps)
        return StepOutput(weights=famo_weights(z, floor), objective=famo_objective(z, losses, floor, self.params.eps))

    def present_objective_and_weights(self, losses: torch.Tensor, present: torch.Tensor) -> StepOutput:
        """FAMO's step on the present tasks: z restricted to them (c renormalises it, so this is the T'-task
        problem's softmax), weight 0 and no objective term for an absent task; all 0 when none is present."""
        z = torch.where(present, self.task_weights().to(losses.dtype), torch.zeros_like(losses))
        floor = safe_losses(losses.detach(), self.params.eps)
        ratios = z / floor
        total = ratios.sum()
        total = torch.where(total > 0, total, torch.ones_like(total))
        logs = torch.where(present, torch.log(torch.where(present, losses, floor).clamp_min(self.params.eps)), 0.0)
        return StepOutput(weights=ratios / total, objective=(z * logs).sum() / total)

    def weights_changed_per_step(self) -> bool:
        """Always: ξ and the losses change every step."""
        return True

    def diagnostics(self) -> dict[str, float]:
        """Logit updates made and skipped (a non-finite or non-positive loss in δ)."""
        return {"logit_updates": float(self.t_.item()), "skipped_logit_updates": float(self.skipped_.item())}


@register_method("famo")
class FAMO(_FAMOLogits):
    """FAMO as its authors run it: after the model step, ξ moves on the same batch's loss decrease."""

    description = "FAMO (Liu et al., NeurIPS 2023): balanced log-loss decrease; logits updated from the same batch."
    reevaluates = True

    def setup(self) -> None:
        super().setup()
        self.register_buffer("before_log_", torch.zeros(self.num_tasks, dtype=torch.float64))  # log max(ℓ, ε) before
        self.register_buffer("before_ok_", torch.zeros((), dtype=torch.bool))

    def step(self, ctx: StepContext) -> StepOutput:
        """The objective c·Σ z log ℓ at the current ξ; remembers log ℓ for the logit step."""
        current, present = ctx.losses.detach().double(), ctx.present()
        self.before_log_.copy_(torch.log(safe_losses(current, self.params.eps)))
        self.before_ok_.copy_(usable(current) if present is None else usable_present(current, present))
        return self.objective_and_weights(ctx.losses, present)

    def after_update(self, ctx: StepContext, reevaluate) -> None:
        """δ = log ℓ(θ_k) − log ℓ(θ_{k+1}) on the same batch (one extra forward), then one logit step (of the
        present tasks', where labels are missing: the same batch, so the same tasks have a loss after)."""
        after, present = reevaluate().detach().double(), ctx.present()
        log_after = torch.log(safe_losses(after, self.params.eps))
        if present is None:
            self.logit_update(self.before_log_, log_after, self.before_ok_ & usable(after))
            return
        present = present.to(after.device)
        self.logit_update(
            self.before_log_, log_after, self.before_ok_ & usable_present(after, present), present=present
        )


@register_method("famo-nextbatch")
class FAMONextBatch(_FAMOLogits):
    """An approximation of FAMO without the extra forward: δ from consecutive batches."""

    description = "FAMO, next-batch approximation: δ from consecutive steps' losses (no extra forward; noisier)."

    def setup(self) -> None:
        super().setup()
        self.register_buffer("prev_log_", torch.zeros(self.num_tasks, dtype=torch.float64))  # log max(ℓ, ε), last step
        self.register_buffer("prev_ok_", torch.zeros((), dtype=torch.bool))
        self.register_buffer("has_prev_", torch.zeros((), dtype=torch.bool))

    def observe(self, losses: torch.Tensor, present: torch.Tensor | None = None) -> None:
        """Update ξ from the previous and these losses (guarded), then remember these. With `present` (missing
        labels) only the tasks with a loss at both steps take part in the update (δ needs both)."""
        current = losses.detach().double()
        log_now = torch.log(safe_losses(current, self.params.eps))
        if present is None:
            ok_now = usable(current)
            self.logit_update(self.prev_log_, log_now, self.has_prev_ & self.prev_ok_ & ok_now, counts=self.has_prev_)
            self.prev_log_.copy_(log_now)
        else:
            # prev_log_ holds +inf for a task without a loss at the last step (never the case without missing
            # labels, where it is always finite): no separate state, so checkpoints keep their layout
            ok_now = usable_present(current, present)
            both = present & torch.isfinite(self.prev_log_)
            ok = self.has_prev_ & self.prev_ok_ & ok_now & both.any()
            self.logit_update(self.prev_log_, log_now, ok, counts=self.has_prev_, present=both)
            self.prev_log_.copy_(torch.where(present, log_now, torch.full_like(log_now, math.inf)))
        self.prev_ok_.copy_(ok_now)
        self.has_prev_.fill_(True)

    def step(self, ctx: StepContext) -> StepOutput:
        """Update ξ with the loss change since the last step, then the objective c·Σ z log ℓ."""
        present = ctx.present()
        self.observe(ctx.losses, present)
        return self.objective_and_weights(ctx.losses, present)
