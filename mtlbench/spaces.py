"""Gradient spaces: where a method reads per-task gradients and how its decision reaches the model.

A method declares its space by name (`Method.needs`, e.g. "shared_params"). The space owns the
three things that differ between spaces, so the trainer never compares names:

* which tensors the per-task gradients are taken against (`tensors`), and so the (T, P)
  matrix the method sees in `StepContext.grads` (`per_task_gradients`);
* how a method's aggregated gradient (`StepOutput.shared_grad`, shape (P,)) is put into the
  shared parameters' `.grad` (`apply_shared_grad`);
* what the trainer backpropagates for the step (`backward`): the method's objective or Σ w_t L_t,
  or, with a shared gradient, each head's own loss gradient plus the shared gradient.

A new space (e.g. per-layer gradients) is one subclass registered with `register_space`.

This module imports no torch at import time: the CLI reads a space's facts (`per_task`,
`description`) before it imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from mtlbench.errors import UserError, did_you_mean

if TYPE_CHECKING:
    import torch
    from torch import nn


class GradientSpace:
    """The space of per-task gradients a method works in (subclass and register to add one)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Whether the trainer computes per-task gradients for it (False only for the loss space).
    per_task: ClassVar[bool] = True
    # Whether the per-task backward stops after a small part of the graph (the heads, the last
    # shared layer): then one vectorized backward beats T sequential ones on a GPU (grads.py).
    small: ClassVar[bool] = False

    def tensors(self, model: "nn.Module", features: "torch.Tensor") -> list["torch.Tensor"]:
        """The tensors whose gradients, flattened and concatenated, make one row of the (T, P) matrix."""
        raise NotImplementedError

    def per_task_gradients(
        self, losses: "torch.Tensor", model: "nn.Module", features: "torch.Tensor", engine: str
    ) -> "torch.Tensor | None":
        """(T, P) per-task gradients in this space (detached), or None for a space without them."""
        if not self.per_task:
            return None
        from mtlbench import grads

        return grads.per_task_gradients(losses, self.tensors(model, features), self.small, engine)

    def apply_shared_grad(self, shared_grad: "torch.Tensor", model: "nn.Module", features: "torch.Tensor") -> None:
        """Put an aggregated gradient (P,) of this space into the shared parameters' `.grad`."""
        raise ValueError(
            f"a method in the {self.name!r} space must return weights or an objective, not a shared gradient"
        )

    def backward(self, out: Any, losses: "torch.Tensor", model: "nn.Module", features: "torch.Tensor") -> None:
        """Fill every trainable parameter's `.grad` from the method's StepOutput `out`.

        Without a shared gradient: one backward of `out.objective`, or of Σ_t w_t L_t. With one:
        each head gets the gradient of its own loss and the shared trunk the method's aggregate.
        """
        import torch

        if out.shared_grad is None:
            if out.objective is not None:
                objective = out.objective
            elif out.weights is not None:
                objective = (out.weights.detach() * losses).sum()
            else:
                raise ValueError("a method's step must return weights, an objective or a shared gradient")
            objective.backward()
            return
        head_params = model.head_parameters()
        head_grads = torch.autograd.grad(losses.sum(), head_params, retain_graph=True)
        self.apply_shared_grad(out.shared_grad, model, features)
        for p, g in zip(head_params, head_grads):
            p.grad = g


class LossSpace(GradientSpace):
    """No per-task gradients: the method sees only the losses (loss weighting)."""

    name = "losses"
    description = "loss weighting"
    per_task = False


class SharedParamsSpace(GradientSpace):
    """Per-task gradients with respect to every shared (trunk) parameter: P ≈ 11.2 M for ResNet18."""

    name = "shared_params"
    description = "gradient (shared parameters)"

    def tensors(self, model: "nn.Module", features: "torch.Tensor") -> list["torch.Tensor"]:
        """The trunk's parameters."""
        return model.shared_parameters()

    def apply_shared_grad(self, shared_grad: "torch.Tensor", model: "nn.Module", features: "torch.Tensor") -> None:
        """Each shared parameter's slice of `shared_grad`, as a view where the layout allows."""
        import torch

        offset = 0
        for p in model.shared_parameters():
            n = p.numel()
            g = shared_grad[offset : offset + n].view_as(p).to(p.dtype)  # a view: no copy
            if not p.is_contiguous():  # channels_last on CUDA: the grad in p's layout keeps the fused optimizer
                g = torch.empty_like(p).copy_(g)
            p.grad = g
            offset += n


class SharedFeaturesSpace(GradientSpace):
    """Per-task gradients with respect to the batch's shared features (B × 512): MGDA-UB's space."""

    name = "shared_features"
    description = "gradient (shared features)"
    small = True

    def tensors(self, model: "nn.Module", features: "torch.Tensor") -> list["torch.Tensor"]:
        """The shared features of the batch."""
        return [features]

    def apply_shared_grad(self, shared_grad: "torch.Tensor", model: "nn.Module", features: "torch.Tensor") -> None:
        """Backpropagate the aggregated feature gradient through the trunk."""
        import torch

        params = model.shared_parameters()
        grad_out = shared_grad.view_as(features).to(features.dtype)
        for p, g in zip(params, torch.autograd.grad(features, params, grad_outputs=grad_out, retain_graph=True)):
            p.grad = g


class LastSharedLayerSpace(GradientSpace):
    """Per-task gradients with respect to the last shared layer's weight (GradNorm's W); weights only."""

    name = "last_shared_layer"
    description = "gradient (last shared layer)"
    small = True

    def tensors(self, model: "nn.Module", features: "torch.Tensor") -> list["torch.Tensor"]:
        """The last shared layer's parameters."""
        return model.last_shared_layer()


SPACES: dict[str, GradientSpace] = {}


def register_space(cls: type[GradientSpace]) -> type[GradientSpace]:
    """Make `cls` available to methods under `cls.name` (one instance; spaces hold no state)."""
    if cls.name in SPACES and type(SPACES[cls.name]) is not cls:
        raise ValueError(f"gradient space {cls.name!r} is registered twice")
    SPACES[cls.name] = cls()
    return cls


for _space in (LossSpace, SharedParamsSpace, SharedFeaturesSpace, LastSharedLayerSpace):
    register_space(_space)


def space(name: str) -> GradientSpace:
    """The registered space `name`; a UserError naming the valid ones otherwise."""
    if name not in SPACES:
        raise UserError(f"unknown gradient space {name!r}{did_you_mean(name, SPACES)}; valid: {', '.join(SPACES)}")
    return SPACES[name]
