"""What every method's hyperparameters share: the spec the CLI reads before torch, the empty Params,
the gradient-need and weight-scale names, and small checks of values."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple, Sequence

# The built-in gradient spaces (mtlbench/spaces.py); a plugin may register more, so a spec holds a str.
GradientNeed = Literal["losses", "shared_params", "shared_features", "last_shared_layer"]
WeightScale = Literal["sum-to-T", "none", "learned", "no-weights"]
WEIGHT_SCALES = typing.get_args(WeightScale)


@dataclass
class NoHyperparameters:
    """Hyperparameters of a method that has none."""

    search_space: ClassVar[dict[str, tuple]] = {}  # only the shared settings are searched

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """Nothing to check."""


class MethodSpec(NamedTuple):
    """A built-in method's declaration, the one source of it: `register_method` sets these on the class.

    The CLI reads it before torch is imported (hyperparameter checks, `needs` for the engine).
    """

    needs: str  # the name of its gradient space (mtlbench/spaces.py)
    Params: type
    weight_scale: str  # how its weights are scaled, one of WEIGHT_SCALES (for the report and the conformance check)
    syncs_host: bool = True  # False when `step` never reads a tensor's value on the host (conformance-checked)
    # Part of every run's identity: bump it when the method's math changes, so that results of the
    # old code are never reused for the new (a new version is a new cell). A changed default needs
    # no bump: the resolved hyperparameters are part of the identity too (RunConfig.hashed_fields),
    # and runs stored before they were (schema < 4) are migrated with the defaults of their time
    # (results/schema.py, DEFAULTS_BEFORE_SCHEMA_4).
    version: int = 1


def is_number(x: object) -> bool:
    """An int or float, not a bool."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def positive_number(x: object) -> bool:
    """A finite number > 0."""
    return is_number(x) and math.isfinite(x) and x > 0  # type: ignore[arg-type]
