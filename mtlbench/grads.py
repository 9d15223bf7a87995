"""Per-task gradient engine: the T per-task gradients a gradient-manipulating method declared.

This is the reference ("loop") engine: one backward pass per task with the graph retained,
the way LibMTL and the DeepChest authors' baselines compute them. The trainer asks only for
the space a method declared (`needs`) and maps the method's aggregated gradient back.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlbench.methods.base import GradientNeed


def _space(need: GradientNeed, model: nn.Module, features: torch.Tensor) -> list[torch.Tensor]:
    if need == "shared_params":
        return model.shared_parameters()
    if need == "last_shared_layer":
        return model.last_shared_layer()
    if need == "shared_features":
        return [features]
    raise ValueError(f"no gradient space for need {need!r}")


def per_task_gradients(
    losses: torch.Tensor, need: GradientNeed, model: nn.Module, features: torch.Tensor
) -> torch.Tensor:
    """(T, P) matrix whose row t is ∇ L_t in the declared space, flattened; detached."""
    space = _space(need, model, features)
    rows = []
    for t in range(losses.shape[0]):
        g = torch.autograd.grad(losses[t], space, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(gi if gi is not None else torch.zeros_like(p)).reshape(-1) for gi, p in zip(g, space)]))
    return torch.stack(rows)


def apply_shared_gradient(
    need: GradientNeed, shared_grad: torch.Tensor, model: nn.Module, features: torch.Tensor
) -> None:
    """Put an aggregated gradient (P,) into the shared parameters' `.grad`."""
    if need == "shared_params":
        offset = 0
        for p in model.shared_parameters():
            n = p.numel()
            p.grad = shared_grad[offset : offset + n].view_as(p).to(p.dtype).clone()
            offset += n
        return
    if need == "shared_features":
        params = model.shared_parameters()
        grads = torch.autograd.grad(features, params, grad_outputs=shared_grad.view_as(features), retain_graph=True)
        for p, g in zip(params, grads):
            p.grad = g
        return
    raise ValueError(f"a method that needs {need!r} must return weights, not a shared gradient")
