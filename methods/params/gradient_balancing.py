"""Hyperparameters of the gradient-balancing methods FairGrad, ConFIG (none), GradVac and the DeepChest authors'
GradNorm baseline (`gradnorm-authors`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from mtlbench.errors import UserError
from mtlbench.methods.params.common import MethodSpec, NoHyperparameters, is_number, positive_number


@dataclass
class FairGradParams:
    """FairGrad's fairness degree α and the authors' clipping of the shared update (0: no clipping).

    α = 2.0: every experiment script of the authors (OptMN-Lab/fairgrad@2b8cba1e3d070583ee1d00f8fc0ccc9bc4695c50
    experiments/celeba/run.sh line 5, likewise cityscapes, nyuv2, quantum_chemistry); max_norm = 1.0:
    experiments/utils.py line 75, applied by methods/weight_methods.py lines 870-871.
    """

    alpha: float = field(default=2.0, metadata={"note": "α-fairness degree; 1 is proportional fairness (Nash-MTL)"})
    max_norm: float = field(default=1.0, metadata={"note": "clip the shared update's norm to this; 0 disables"})

    # α = 2 is every run.sh of the authors, α = 1 their code's default (experiments/utils.py line 71);
    # 0.5 and 5 are ours. max_norm stays as released: not searched.
    search_space: ClassVar[dict[str, tuple]] = {"alpha": (0.5, 1.0, 2.0, 5.0)}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """α finite and > 0; max_norm finite and ≥ 0."""
        if not positive_number(self.alpha):
            raise UserError(f"{method}: alpha must be a finite number > 0, got {self.alpha!r}")
        if not (is_number(self.max_norm) and math.isfinite(self.max_norm) and self.max_norm >= 0):
            raise UserError(f"{method}: max_norm must be a finite number ≥ 0 (0: no clipping), got {self.max_norm!r}")


@dataclass
class GradVacParams:
    """GradVac's EMA rate β of the pairwise similarity targets (LibMTL's default 0.5)."""

    beta: float = field(default=0.5, metadata={"note": "EMA rate of the similarity targets φ̂ ← (1−β)φ̂ + βφ"})

    # 0.5 is LibMTL's default (median-research-group/LibMTL@4336804847eaa5e0b924b743d76beec7ac3fdc97
    # LibMTL/config.py line 42); 0.01 and 0.1 are ours
    search_space: ClassVar[dict[str, tuple]] = {"beta": (0.01, 0.1, 0.5)}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """0 ≤ β ≤ 1 (β = 0 keeps every target at 0: PCGrad)."""
        if not (is_number(self.beta) and 0 <= self.beta <= 1):
            raise UserError(f"{method}: beta must be a number in [0, 1], got {self.beta!r}")


@dataclass
class GradNormAuthorsParams:
    """The constants of the DeepChest authors' GradNorm baseline, as released
    (youssefkhalil320/DeepChest-MTL@0c45bdd1b24101cd4b333b591a69fdc5853e0929, GradNorm_MTL/).

    α = 0.12: `--alpha` default in train.py line 28 (and `alpha=0.12` in MTLTrainerWithGradNorm.__init__,
    trainers/mtl_grad_norm_trainer.py line 11); one α is both the exponent of the correct counts
    (compute_target_gradient_norms, line 45) and the weights' step size (update_task_weights, line 69).
    initial_weight = 1.0: `self.task_weights = {task: 1.0 ...}` (line 18). min_weight = 1e-6:
    `max(self.task_weights[task], 1e-6)` (line 70).
    """

    alpha: float = field(
        default=0.12, metadata={"note": "exponent of the correct counts and the weights' step size, as theirs"}
    )
    initial_weight: float = 1.0
    min_weight: float = 1e-6

    # ours: a factor of about 2 either side of the released 0.12 (the authors ran only 0.12)
    search_space: ClassVar[dict[str, tuple]] = {"alpha": (0.06, 0.12, 0.25)}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """α, initial_weight and min_weight finite numbers > 0."""
        if not (positive_number(self.alpha) and positive_number(self.initial_weight)):
            raise UserError(f"{method}: alpha and initial_weight must be finite numbers > 0")
        if not positive_number(self.min_weight):
            raise UserError(f"{method}: min_weight must be a finite number > 0, got {self.min_weight!r}")


GRADIENT_BALANCING_SPECS: dict[str, MethodSpec] = {
    "fairgrad": MethodSpec("shared_params", FairGradParams, "none"),
    "config": MethodSpec("shared_params", NoHyperparameters, "none"),
    "gradvac": MethodSpec("shared_params", GradVacParams, "none"),
    "gradnorm-authors": MethodSpec("shared_params", GradNormAuthorsParams, "none", syncs_host=False),
}
