"""Hyperparameters of the Gramian weightings: IMTL-G (none), Nash-MTL, Aligned-MTL, UPGrad and DualProj.

Defaults are the authors' (sources in each method's module docstring). UPGrad and DualProj share
`DualConeParams`, the constants of the authors' dual-cone projection (TorchJD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Sequence

from mtlbench.errors import UserError
from mtlbench.methods.params.common import MethodSpec, NoHyperparameters, is_number

ALIGNED_MTL_SCALE_MODES = ("min", "median", "rmse")
AlignedScaleMode = Literal["min", "median", "rmse"]


def _non_negative(x: object) -> bool:
    return is_number(x) and math.isfinite(x) and x >= 0  # type: ignore[arg-type]


@dataclass
class NashMTLParams:
    """Nash-MTL's update-norm bound and how often the bargaining weights are solved for.

    Defaults from AvivNavon/nash-mtl: max_norm 1.0 (methods/weight_methods.py, NashMTL.__init__),
    update_weights_every 1 (experiments/utils.py, --update-weights-every).
    """

    max_norm: float = field(
        default=1.0, metadata={"note": "bound on ‖Σ α_t g_t‖ (the authors' clip_grad_norm_ of the shared part); 0: off"}
    )
    update_weights_every: int = field(
        default=1, metadata={"note": "solve for α every k steps, reuse it in between (authors' default 1)"}
    )

    # None searched: every released experiment of the authors uses max_norm 1 and update_weights_every 1;
    # with ‖Σα_t g_t‖ = √T at the solution, max_norm only rescales the step, as the shared lr does.
    search_space: ClassVar[dict[str, tuple]] = {}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """max_norm finite and ≥ 0 (0 turns the bound off); update_weights_every a whole number ≥ 1."""
        if not _non_negative(self.max_norm):
            raise UserError(f"{method}: max_norm must be a finite number ≥ 0 (0 turns it off), got {self.max_norm!r}")
        if not (isinstance(self.update_weights_every, int) and self.update_weights_every >= 1):
            raise UserError(
                f"{method}: update_weights_every must be a whole number ≥ 1, got {self.update_weights_every!r}"
            )


@dataclass
class AlignedMTLParams:
    """Aligned-MTL's scale of the aligned gradients: the smallest, median or mean eigenvalue of G.

    Default "min", SamsungLabs/MTL code/optim/aligned/balancer.py (AlignedMTLBalancer.__init__),
    never overridden by the authors' scripts.
    """

    scale_mode: AlignedScaleMode = field(
        default="min", metadata={"note": "min | median | rmse: σ² of the aligned gradients (authors' default min)"}
    )

    # every scale mode of the authors' ProcrustesSolver (code/optim/aligned/solver.py)
    search_space: ClassVar[dict[str, tuple]] = {"scale_mode": ALIGNED_MTL_SCALE_MODES}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """A known scale mode."""
        if self.scale_mode not in ALIGNED_MTL_SCALE_MODES:
            raise UserError(
                f"{method}: unknown scale_mode {self.scale_mode!r}; valid: {', '.join(ALIGNED_MTL_SCALE_MODES)}"
            )


@dataclass
class DualConeParams:
    """The constants of the authors' projection onto the dual cone (UPGrad, DualProj).

    The Gramian is divided by its trace (by nothing below `norm_eps`, where it is taken as 0) and
    `reg_eps`·I is added before the projection: TorchJD's defaults 1e-4 and 1e-4 (UPGrad and
    DualProj constructors). reg_eps 0 gives the paper's exact projection.
    """

    norm_eps: float = field(default=1e-4, metadata={"note": "trace(G) below this counts as G = 0 (TorchJD's)"})
    reg_eps: float = field(
        default=1e-4, metadata={"note": "added to the diagonal of G/trace(G) (TorchJD's); 0: the exact projection"}
    )

    # None searched: numerical constants of the authors' solver, not of the method.
    search_space: ClassVar[dict[str, tuple]] = {}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """norm_eps and reg_eps finite and ≥ 0."""
        if not (_non_negative(self.norm_eps) and _non_negative(self.reg_eps)):
            raise UserError(f"{method}: norm_eps and reg_eps must be finite numbers ≥ 0")


GRAMIAN_WEIGHTING_SPECS: dict[str, MethodSpec] = {
    "imtl-g": MethodSpec("shared_params", NoHyperparameters, "sum-to-T"),
    "nash-mtl": MethodSpec("shared_params", NashMTLParams, "none"),
    "aligned-mtl": MethodSpec("shared_params", AlignedMTLParams, "none"),
    "upgrad": MethodSpec("shared_params", DualConeParams, "none"),
    "dualproj": MethodSpec("shared_params", DualConeParams, "none"),
}
