"""GradDrop: Gradient Sign Dropout, an aggregator without task weights.

Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a Sign: Optimizing Deep
Multitask Models with Gradient Sign Dropout", NeurIPS 2020 (Algorithm 1). At a layer with
activations A (here the shared features, B × D) and per-task gradients ∇_A L_i:

    ∇_i = Σ_batch sign(A) ∘ ∇_A L_i                     (D,)   (eq. 2; summed over the batch)
    P   = ½ (1 + Σ_i ∇_i / Σ_i |∇_i|)                    (D,)   gradient positive sign purity
    U   ~ Uniform(0, 1)                                 (D,)   one draw per element and step
    M_i = I[P > U] ∘ I[∇_i > 0] + I[P < U] ∘ I[∇_i < 0]        (f = identity, the paper's default)
    ∇_A ← Σ_i (k + (1 − k) M_i) ∘ ∇_A L_i               (each sample's gradient, masked per element)

so at every feature element only the gradients of one sign survive, positive with probability P.
Here A is the pooled output of the trunk's last ReLU block (LibMTL's `rep`), so sign(A) is 1, or 0
for a feature that is exactly 0, and ∇_i is simply the batch sum of the feature gradients.
The leak k (0 by default, as in LibMTL's implementation and the paper's multitask experiments)
keeps a share of every gradient. The masked gradient is backpropagated through the trunk; heads
get their own losses' gradients, as for every method. There are no task weights to log: the
method returns only the shared gradient (weight_scale "no-weights").

Deviations: Σ_i |∇_i| gets 1e-7 added against 0/0 (as in LibMTL; the paper has none); where
sign(A) = 0 (a feature that is exactly 0 after the ReLU and pooling, whose gradient reaches no
parameter anyway) every ∇_i is 0 and the element is dropped. U is drawn from the method's own
generator on the host and copied to the device (no sync).
"""

from __future__ import annotations

import torch

from mtlbench.methods.base import Method, StepContext, StepOutput
from mtlbench.registry import register_method

PURITY_EPS = 1e-7


def sign_purity(signed: torch.Tensor) -> torch.Tensor:
    """P = ½(1 + Σ_i ∇_i / Σ_i |∇_i|) over tasks (dim 0) of the batch-summed signed gradients (T, D)."""
    return 0.5 * (1 + signed.sum(0) / (signed.abs().sum(0) + PURITY_EPS))


def graddrop_masks(signed: torch.Tensor, purity: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """M (T, D): keep a task's gradient element where its sign is the one drawn (positive iff P > U)."""
    return ((purity > uniform) & (signed > 0)) | ((purity < uniform) & (signed < 0))


def graddrop_gradient(
    grads: torch.Tensor, activations: torch.Tensor, uniform: torch.Tensor, leak: float
) -> torch.Tensor:
    """The aggregated activation gradient (B, D) from per-task gradients (T, B, D) and activations (B, D)."""
    signed = (grads * activations.sign()).sum(1)
    masks = graddrop_masks(signed, sign_purity(signed), uniform).to(grads.dtype)
    return (grads * (leak + (1 - leak) * masks)[:, None, :]).sum(0)


@register_method("graddrop")
class GradDrop(Method):
    """Per feature element, keep only the task gradients of one randomly chosen sign."""

    description = "GradDrop (Chen et al., NeurIPS 2020): gradient sign dropout at the shared features; no task weights."

    def step(self, ctx: StepContext) -> StepOutput:
        """The sign-dropped sum of the per-task feature gradients."""
        if ctx.grads is None or ctx.space_tensors is None:
            raise ValueError("GradDrop needs the per-task gradients of the shared features and the features")
        (features,) = ctx.space_tensors
        t = ctx.grads.shape[0]
        grads = ctx.grads.view(t, *features.shape).flatten(2)  # (T, B, D)
        activations = features.reshape(features.shape[0], -1).to(grads.dtype)
        uniform = torch.rand(activations.shape[1], generator=self.generator_, dtype=grads.dtype)
        if grads.device.type == "cuda":
            uniform = uniform.pin_memory()  # an asynchronous copy: the host never waits for the device
        uniform = uniform.to(grads.device, non_blocking=True)
        shared = graddrop_gradient(grads, activations, uniform, float(self.params.leak))
        return StepOutput(shared_grad=shared.reshape(-1))

    def weights_changed_per_step(self) -> bool:
        """No weights at all."""
        return False
