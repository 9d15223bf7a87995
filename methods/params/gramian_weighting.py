"""Hyperparameters of the Gramian weightings: IMTL-G (none), Nash-MTL, Aligned-MTL, UPGrad and DualProj.

Defaults are the authors' (sources in each method's module docstring). UPGrad and DualProj share
`DualConeParams`, the constants of the authors' dual-cone projection (TorchJD).
"""

from __future__ import annotations

from mtlbench.methods.params.common import MethodSpec, NoHyperparameters

GRAMIAN_WEIGHTING_SPECS: dict[str, MethodSpec] = {
    "imtl-g": MethodSpec("shared_params", NoHyperparameters),
}
