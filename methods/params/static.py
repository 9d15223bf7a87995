"""Hyperparameters of the static baseline: fixed task weights from a file, or from the training split's labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from mtlbench.errors import UserError
from mtlbench.methods.params.common import MethodSpec, NoHyperparameters
from mtlbench.methods.params.core import read_task_values

STATIC_SOURCES = ("inverse-prevalence", "file")


@dataclass
class StaticParams:
    """Where the fixed weights come from: torchxrayvision's task weights from the training labels (its
    trainer's default), or a JSON file of one weight per task (an object by task name, or a list)."""

    source: str = field(
        default="inverse-prevalence",
        metadata={"note": "inverse-prevalence (torchxrayvision's trainer default) | file (weights_file)"},
    )
    weights_file: str = ""

    # nothing to search: the weights are fixed by the data or the file (the shared lr and weight decay are searched)
    search_space: ClassVar[dict[str, tuple]] = {}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """A known source; with `file`, a readable file of finite weights ≥ 0, not all 0."""
        if self.source not in STATIC_SOURCES:
            raise UserError(f"{method}: unknown source {self.source!r}; valid: {', '.join(STATIC_SOURCES)}")
        if self.source == "file":
            if not self.weights_file:
                raise UserError(f"{method}: source=file needs --param {method}.weights_file=PATH (a JSON file)")
            weights = read_task_values(self.weights_file, task_names, "weights", method)
            if min(weights) < 0 or max(weights) == 0:
                raise UserError(f"{method} weights file {self.weights_file}: weights must be ≥ 0 and not all 0")
        elif self.weights_file:
            raise UserError(
                f"{method}: weights_file {self.weights_file!r} is read only with --param {method}.source=file"
            )


@dataclass
class DeepChestFixedParams:
    """DeepChest's released constants (DeepChest-MTL weighting/dwbstl.py) and the number of its epoch updates
    whose destination is applied from step 0; 15 is the authors' released chest X-ray training command."""

    epochs: int = 15
    increase_factor: float = 1.1
    max_weight: float = 1.5
    decay_factor: float = 1.05
    initial_weight: float = 1.0

    search_space: ClassVar[dict[str, tuple]] = {}  # the destination of DeepChest's defaults: nothing to search

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """A number of updates in 0 … 10,000, factors ≥ 1, max_weight and initial_weight > 0."""
        if not 0 <= self.epochs <= 10_000:
            raise UserError(f"{method}: epochs must lie in 0 … 10000, got {self.epochs}")
        if self.increase_factor < 1 or self.decay_factor < 1 or self.max_weight <= 0 or self.initial_weight <= 0:
            raise UserError(
                f"{method}: increase_factor and decay_factor must be ≥ 1, max_weight and initial_weight > 0"
            )


SINGLE_TASK = "stl"  # the single-task baseline's method name: one run per task (`mtlbench run --stl`)

# the baselines beside EW: fixed weights, single-task learning (one run per task, `run --stl`), and
# DeepChest's destination as fixed weights (does its path matter, or only where it ends?)
STATIC_SPECS: dict[str, MethodSpec] = {
    "static": MethodSpec("losses", StaticParams, "none", syncs_host=False),
    SINGLE_TASK: MethodSpec("losses", NoHyperparameters, "sum-to-T", syncs_host=False),
    "deepchest-fixed": MethodSpec("losses", DeepChestFixedParams, "none", syncs_host=False),
}
