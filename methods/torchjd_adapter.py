"""torchjd's Gramian weightings under this harness, as `jd-<name>` methods (the optional extra).

`pip install -e '.[torchjd]'` installs torchjd (Quinton & Rey, "Jacobian Descent for Multi-Objective
Optimization", 2024; version range in setup.cfg). mtlbench's own packaging declares each `jd-<name>`
as a method plugin (setup.cfg, `mtlbench.methods` entry points), so `mtlbench list`, `--methods
jd-upgrad` and `--methods torchjd` find them once torchjd is installed; without it, naming one is a
one-line error that says how to install it.

Each adapter is a GramianMethod: the harness computes the Gramian G = J Jᵀ of the shared parameters'
per-task gradients (the same float64 Gramian mtlbench's own methods use), torchjd's weighting maps it
to weights, and the update is Σ_t w_t g_t. Two conventions are the adapter's:

* scale: mtlbench's EW sums the task losses (weights 1). torchjd's UPGrad, DualProj, IMTL-G, Aligned-MTL,
  MGDA and CAGrad are normalised like its `Mean` (weights 1/T for T orthonormal gradients); the adapter
  multiplies those by T, so that a learning rate means the same as for EW (jd-mgda then equals mgda with
  `normalization=none`, whose weights are T·α). torchjd's PCGrad and FairGrad already give 1 there and are
  left as they are;
* randomness: torchjd's PCGrad draws its task orders from the global torch RNG; the adapter runs every
  weighting inside `torch.random.fork_rng`, seeded from the method's own generator, so that a run is
  deterministic given its seed and leaves the global RNG untouched (the method contract).

Stateful torchjd weightings (GradVac, PCD) keep their state in buffers created on first use, which a
checkpoint cannot restore into a fresh module; they are left out rather than resumed wrongly.
Hyperparameters are torchjd's defaults, except where its constructor has none: CAGrad's c = 0.4 (the
CAGrad authors' default, as mtlbench's cagrad) and FairGrad's α = 1.0 (see FAIRGRAD_ALPHA).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from mtlbench.methods.gramian import GramianMethod
from mtlbench.methods.params import NoHyperparameters
from mtlbench.plan import TORCHJD_MISSING

try:
    from torchjd import aggregation as _jd
except ImportError:  # the plugin scan reports this one line wherever a jd-* method is named
    raise ImportError(f"{TORCHJD_MISSING}: pip install -e '.[torchjd]'") from None

CAGRAD_C = 0.4  # as mtlbench's cagrad (the CAGrad authors' default)
FAIRGRAD_ALPHA = 1.0  # α = 1: proportional fairness, FairGrad's equivalence to Nash-MTL (Ban & Ji 2024)


class TorchJDMethod(GramianMethod):
    """A torchjd Gramian weighting as a mtlbench method: weights T · torchjd's, on the float64 Gramian."""

    description = "torchjd weighting"
    weight_scale = "none"
    Params = NoHyperparameters
    syncs_host = True  # torchjd's weightings read values on the host (solvers, comparisons)
    factory: ClassVar[Any] = None  # () → the torchjd weighting
    times_tasks: ClassVar[bool] = True  # multiply torchjd's weights by T (see the module's docstring)

    def setup(self) -> None:
        self.jd_weighting = type(self).factory()  # stateless: nothing to checkpoint

    def gramian_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """torchjd's weights of the usable tasks (× T where `times_tasks`), under a global RNG forked from ours."""
        seed = int(torch.randint(0, 2**62, (), generator=self.generator_))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            weights = self.jd_weighting(gram.clone()).to(dtype=torch.float64, device="cpu")
        return gram.shape[0] * weights if self.times_tasks else weights


def _adapter(name: str, factory: Any, what: str, times_tasks: bool = True) -> type[TorchJDMethod]:
    scale = ", weights × T" if times_tasks else ""
    attributes = {"factory": staticmethod(factory), "times_tasks": times_tasks, "__doc__": what}
    return type(name, (TorchJDMethod,), {**attributes, "description": f"torchjd's {what}{scale}"})


JDUPGrad = _adapter("JDUPGrad", _jd.UPGradWeighting, "UPGrad (Quinton & Rey 2024)")
JDDualProj = _adapter("JDDualProj", _jd.DualProjWeighting, "DualProj (Quinton & Rey 2024)")
JDIMTLG = _adapter("JDIMTLG", _jd.IMTLGWeighting, "IMTL-G (Liu et al. 2021)")
JDAlignedMTL = _adapter("JDAlignedMTL", _jd.AlignedMTLWeighting, "Aligned-MTL (Senushkin et al. 2023)")
JDMGDA = _adapter("JDMGDA", _jd.MGDAWeighting, "MGDA (Sener & Koltun 2018; Frank-Wolfe)")
JDPCGrad = _adapter("JDPCGrad", _jd.PCGradWeighting, "PCGrad (Yu et al. 2020)", times_tasks=False)
JDCAGrad = _adapter("JDCAGrad", lambda: _jd.CAGradWeighting(c=CAGRAD_C), "CAGrad (Liu et al. 2021), c = 0.4")
JDFairGrad = _adapter(
    "JDFairGrad",
    lambda: _jd.FairGradWeighting(alpha=FAIRGRAD_ALPHA),
    "FairGrad (Ban & Ji 2024), α = 1",
    times_tasks=False,
)
