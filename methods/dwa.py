"""Dynamic Weight Average (DWA): weights from the rate of change of each task's loss.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention" (MTAN), CVPR 2019,
eq. 3 (K tasks, epoch t, temperature T):

    λ_k(t) = K · exp(w_k(t−1)/T) / Σ_i exp(w_i(t−1)/T),   w_k(t−1) = L_k(t−1) / L_k(t−2)

with L_k the epoch-mean training loss of task k (here `EpochStats.train_loss`), T = 2, and
λ_k = 1 for the first two epochs (there is no ratio yet). Weights sum to K and are fixed
within an epoch; the loss is Σ_k λ_k L_k.

Guard: if a loss of either epoch in the ratio is not finite or not positive, the update is
skipped (the previous weights stay in force) and counted in `diagnostics()`.
"""

from __future__ import annotations


import torch

from mtlbench.methods.base import EpochStats, Method, StepContext, StepOutput
from mtlbench.registry import register_method


def dwa_weights(last: torch.Tensor, before_last: torch.Tensor, temperature: float) -> torch.Tensor:
    """λ = K · softmax(r / T) with r_k = L_k(t−1) / L_k(t−2)."""
    ratios = last / before_last
    return len(ratios) * torch.softmax(ratios / temperature, dim=0)


def usable_losses(losses: torch.Tensor) -> bool:
    """True if every epoch loss is finite and positive (so the loss ratio is defined)."""
    return bool((torch.isfinite(losses) & (losses > 0)).all())


@register_method("dwa")
class DynamicWeightAverage(Method):
    """Per-epoch weights K·softmax(L(t−1)/L(t−2) / T); all 1 for the first two epochs."""

    description = "DWA (Liu et al., CVPR 2019): K·softmax of last-epoch loss ratios / T, T = 2."

    def setup(self) -> None:
        self.register_buffer("weights_", torch.ones(self.num_tasks, dtype=torch.float64))
        self.history_: list[torch.Tensor] = []  # epoch-mean training losses on the host, the last two
        self.skipped_ = 0

    def step(self, ctx: StepContext) -> StepOutput:
        """The weights of the current epoch; the trainer backpropagates Σ_t λ_t L_t."""
        return StepOutput(weights=self.weights_.to(device=ctx.losses.device, dtype=ctx.losses.dtype))

    def end_epoch(self, stats: EpochStats) -> None:
        """Record the epoch's training losses; from two epochs on, set the next epoch's weights."""
        self.history_ = [*self.history_, stats.train_loss.detach().double().cpu()][-2:]
        if len(self.history_) < 2:
            return
        before_last, last = self.history_
        if stats.labelled is not None:
            self.update_present(last, before_last)
            return
        if not (usable_losses(before_last) and usable_losses(last)):
            self.skipped_ += 1
            return
        self.weights_.copy_(dwa_weights(last, before_last, self.params.temperature))

    def update_present(self, last: torch.Tensor, before_last: torch.Tensor) -> None:
        """With missing labels: a task without a label in either epoch (NaN loss) has no ratio and keeps its weight;
        the others get eq. 3 among themselves, K'·softmax(r / T) scaled to the weight they hold together
        (K' = their number while every weight is 1), so the weights still sum to K."""
        known = ~(torch.isnan(last) | torch.isnan(before_last))
        if not bool(known.any()):
            return
        if not (usable_losses(before_last[known]) and usable_losses(last[known])):
            self.skipped_ += 1
            return
        weights = self.weights_.detach().cpu()
        share = dwa_weights(last[known], before_last[known], self.params.temperature) / int(known.sum())
        weights[known] = weights[known].sum() * share
        self.weights_.copy_(weights)

    def diagnostics(self) -> dict[str, float]:
        """How many epoch updates were skipped for a non-finite or non-positive epoch loss."""
        return {"skipped_updates": float(self.skipped_)}
