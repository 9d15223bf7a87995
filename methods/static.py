"""Static task weights: the baseline a reviewer asks a dynamic weighting to beat.

Objective Σ_t w_t L_t with w fixed for the whole run:

* `source=inverse-prevalence` (default): torchxrayvision's task weights, its trainer's default
  (mlmed/torchxrayvision, scripts/train_model.py @dba73af `--taskweights` default True; the weights in
  scripts/train_utils.py @74431d0, `train_epoch`): with P_t the training positives of task t,
  w_t = (max P − P_t + mean P) / max_s(max P − P_s + mean P), so the rarest task weighs 1 and the most
  frequent mean P / (max P − min P + mean P);
* `source=file`: one weight per task from a JSON file (`--param static.weights_file=PATH`), as given.

Not renormalised: the weights are used as the file or the formula gives them ("none" scale).
"""

from __future__ import annotations

import torch

from mtlbench.methods.base import Method, StepContext, StepOutput
from mtlbench.methods.params import read_task_values
from mtlbench.registry import register_method


def inverse_prevalence_weights(labels: torch.Tensor) -> torch.Tensor:
    """torchxrayvision's task weights from training labels (N, T): (max P − P + mean P), scaled to a maximum of 1.

    P_t counts the positives among the labelled images: float labels may hold NaN for a missing label, left out
    as torchxrayvision's `np.nansum` leaves them (its datasets have NaN labels too)."""
    values = labels.to(torch.float64)
    positives = values.nansum(dim=0) if labels.is_floating_point() else values.sum(dim=0)
    raw = positives.max() - positives + positives.mean()
    return raw / raw.max()


@register_method("static")
class StaticWeighting(Method):
    """Fixed weights w: from the training labels (inverse prevalence) or from a file."""

    description = "Static weights for the whole run: torchxrayvision's inverse-prevalence task weights, or a file."

    def setup(self) -> None:
        p = self.params
        initial = (
            torch.tensor(read_task_values(p.weights_file, self.task_names, "weights", "static"), dtype=torch.float64)
            if p.source == "file"
            else torch.full((self.num_tasks,), float("nan"), dtype=torch.float64)  # set by bind_training_labels
        )
        self.register_buffer("weights_", initial)
        self.bound = p.source == "file"  # inverse-prevalence: set by bind_training_labels, at every (re)start

    def bind_training_labels(self, labels: torch.Tensor) -> None:
        """With `inverse-prevalence`, the weights of these training labels (the same labels give the same weights)."""
        if self.params.source == "inverse-prevalence":
            self.weights_.copy_(inverse_prevalence_weights(labels))
            self.bound = True

    def step(self, ctx: StepContext) -> StepOutput:
        """The fixed weights, on the losses' device and dtype."""
        if not self.bound:
            raise RuntimeError("static: bind_training_labels was not called before the first step")
        return StepOutput(weights=self.weights_.to(device=ctx.losses.device, dtype=ctx.losses.dtype))

    def weights_changed_per_step(self) -> bool:
        """Never: the weights are logged once per epoch."""
        return False
