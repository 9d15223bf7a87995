"""Hyperparameters of GLS, IMTL-L, STCH, DB-MTL and ExcessMTL (GLS, IMTL-L: none).

Defaults are the authors' released values; each source is cited next to its field (and in the
method's docstring, methods/<name>.py, with the repository, commit and line).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from mtlbench.errors import UserError
from mtlbench.methods.params.common import MethodSpec, NoHyperparameters, is_number, positive_number


@dataclass
class STCHParams:
    """Smooth Tchebycheff's smoothing μ and its warm-up epochs (log-loss sum, then the nadir estimate)."""

    # Xi-L/STCH STCH_MTL/LibMTL/config.py lines 66-67: --STCH_mu 1.0, --STCH_warmup_epoch 4
    mu: float = field(default=1.0, metadata={"note": "smoothing μ of μ·log Σ exp(·/μ) (authors' default 1)"})
    warmup_epochs: int = field(
        default=4,
        metadata={"note": "epochs of Σ log L before STCH; the last one estimates the nadir point (authors' default 4)"},
    )

    # ours: μ a decade either side of the authors' 1, warm-up shorter than their 4 for short runs
    search_space: ClassVar[dict[str, tuple]] = {"mu": (0.1, 0.3, 1.0, 3.0), "warmup_epochs": (1, 2, 4)}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """μ finite and > 0; warm-up epochs a whole number ≥ 0."""
        if not positive_number(self.mu):
            raise UserError(f"{method}: mu must be a finite number > 0, got {self.mu!r}")
        w = self.warmup_epochs
        if not (isinstance(w, int) and not isinstance(w, bool) and w >= 0):
            raise UserError(f"{method}: warmup_epochs must be a whole number ≥ 0, got {w!r}")


@dataclass
class DBMTLParams:
    """DB-MTL's gradient EMA: β_k = β / k^σ in ĝ ← β_k ĝ + (1 − β_k) ∇log(L + ε)."""

    # median-research-group/LibMTL LibMTL/config.py lines 63-64: --DB_beta 0.9, --DB_beta_sigma 0
    beta: float = field(default=0.9, metadata={"note": "EMA factor β of the task gradients (authors' default 0.9)"})
    beta_sigma: float = field(default=0.0, metadata={"note": "β_k = β / k^σ (authors' default σ = 0: constant β)"})

    # ours: around the authors' defaults (0.9, 0)
    search_space: ClassVar[dict[str, tuple]] = {"beta": (0.5, 0.9, 0.99), "beta_sigma": (0.0, 0.5)}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """0 ≤ β < 1, σ finite and ≥ 0."""
        if not (is_number(self.beta) and 0 <= self.beta < 1):
            raise UserError(f"{method}: beta must be a number in [0, 1), got {self.beta!r}")
        if not (is_number(self.beta_sigma) and math.isfinite(self.beta_sigma) and self.beta_sigma >= 0):
            raise UserError(f"{method}: beta_sigma must be a finite number ≥ 0, got {self.beta_sigma!r}")


@dataclass
class ExcessMTLParams:
    """ExcessMTL's step size η of the multiplicative weight update w ← w·exp(η·r)."""

    # yifei-he/ExcessMTL LibMTL/LibMTL/config.py line 69 (and LibMTL's): --robust_step_size 1e-2
    robust_step_size: float = field(
        default=1e-2, metadata={"note": "step η of w ← w·exp(η·excess risk ratio) (authors' default 0.01)"}
    )

    # 1e-2: the authors' default; 1: their README's Office-Home command; 1e-3 and 1e-1: ours
    search_space: ClassVar[dict[str, tuple]] = {"robust_step_size": (1e-3, 1e-2, 1e-1, 1.0)}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """η finite and > 0."""
        if not positive_number(self.robust_step_size):
            raise UserError(f"{method}: robust_step_size must be a finite number > 0, got {self.robust_step_size!r}")


LOSS_LEVEL_SPECS: dict[str, MethodSpec] = {
    "gls": MethodSpec("losses", NoHyperparameters, "none", syncs_host=False),
    "imtl-l": MethodSpec("losses", NoHyperparameters, "learned", syncs_host=False),
    "stch": MethodSpec("losses", STCHParams, "none", syncs_host=False),
    "db-mtl": MethodSpec("shared_params", DBMTLParams, "none", syncs_host=False),
    "excess-mtl": MethodSpec("shared_params", ExcessMTLParams, "sum-to-T", syncs_host=False),
}
