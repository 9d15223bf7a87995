"""Aligned-MTL: align the task gradients to an orthogonal system with equal magnitudes, then sum.

Senushkin et al., "Independent Component Alignment for Multi-Task Learning", CVPR 2023
(Algorithm 1). With the eigendecomposition of the Gramian G = J Jᵀ = V Λ Vᵀ restricted to its
rank r (λ_1 ≥ … ≥ λ_r > 0; J = U Σ Vᵀ with σ_i = √λ_i), the aligned Jacobian is

    Ĵ = σ U Vᵀ = B J,   B = σ V Σ⁻¹ Vᵀ = √s · V Λ^{-1/2} Vᵀ   (T × T, symmetric),

whose rows (the aligned task gradients) are orthogonal with equal norms: Ĵ Ĵᵀ = s · V Vᵀ, so every
non-zero singular value of Ĵ is √s (condition number 1). The update is the sum of the aligned
gradients (the authors' task preferences w = 1): d = Ĵᵀ1 = Jᵀ B 1, so the task weights are

    w = B 1   (`aligned_mtl_weights`).

The scale s (`scale_mode`) is λ_r, the smallest eigenvalue ("min", the paper's σ_min and the
authors' default), the median eigenvalue ("median"; the lower of the two middle ones for an even
rank, as torch.median gives) or the mean eigenvalue ("rmse": the root mean square of the σ_i).
The rank counts eigenvalues above T·ε₃₂·λ_1, ε₃₂ the float32 epsilon, as the authors' code does
(torch.finfo() of the default float32 dtype; their Gramian is float32, ours is float64 summed from
float32 gradients, so the same noise level applies). G = 0 cannot reach the solver: zero gradients
are screened out before it (gramian.screen_rows).

Source: SamsungLabs/MTL@3f577f1365101fdd16094313b4a3b0d3845ce10d code/optim/aligned/solver.py
lines 12–35 (ProcrustesSolver: eigh of the Gramian, rank tolerance, B, aligned gradients) and
code/optim/aligned/balancer.py lines 10 (default scale_mode "min"), 22–24 (the aligned
gradients summed, weights B's row sums) and 30–31 (decoders unscaled by default). The same
weights as LibMTL@4336804847eaa5e0b924b743d76beec7ac3fdc97 LibMTL/weighting/Aligned_MTL.py
lines 24–37 and TorchJD's AlignedMTLWeighting (mean preference, i.e. B 1 / T).

Scale: w = B 1 is what the authors apply; it neither sums to T nor to 1 (weight_scale "none").
With identical gradients (rank 1) B = 11ᵀ/T and w = 1: EW. Task heads receive their own losses'
gradients, as the authors' default (scale_decoder_grad False). No deviation from the authors'
code is intended; the Gramian is taken on the shared parameters, as their "amtl" balancer does
(their "amtlub" variant, on the shared representation, is not registered here).
"""

from __future__ import annotations

import numpy as np
import torch

from mtlbench.methods.gramian import GramianMethod
from mtlbench.registry import register_method

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def balance_transformation(gram: torch.Tensor, scale_mode: str) -> torch.Tensor:
    """B (k, k) with B J the aligned Jacobian: √s · V Λ^{-1/2} Vᵀ on G's numerical range."""
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    lam, vec = np.linalg.eigh(g)  # ascending
    keep = lam > g.shape[0] * FLOAT32_EPS * float(lam.max())
    lam, vec = lam[keep], vec[:, keep]
    if scale_mode == "min":
        scale = lam[0]
    elif scale_mode == "median":
        scale = lam[(lam.shape[0] - 1) // 2]  # the lower middle one, as torch.median
    elif scale_mode == "rmse":
        scale = lam.mean()
    else:
        raise ValueError(f"unknown Aligned-MTL scale_mode {scale_mode!r}")
    return torch.from_numpy(np.sqrt(scale) * (vec / np.sqrt(lam)) @ vec.T)


def aligned_mtl_weights(gram: torch.Tensor, scale_mode: str) -> torch.Tensor:
    """w = B 1 (k,): Σ_t w_t g_t is the sum of the aligned task gradients."""
    return balance_transformation(gram, scale_mode).sum(dim=1)


@register_method("aligned-mtl")
class AlignedMTL(GramianMethod):
    """Aligned-MTL on the shared parameters' gradients; weights B 1."""

    description = "Aligned-MTL (Senushkin et al. 2023): sum of the gradients aligned to equal orthogonal ones."

    def gramian_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """B 1 for the usable tasks."""
        return aligned_mtl_weights(gram, self.params.scale_mode)
