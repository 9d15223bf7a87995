"""Per-task gradient engine: the T per-task gradients a gradient-manipulating method declared.

Two engines compute the same (T, P) Jacobian:

* "batched": one vectorized backward of the T losses against the T unit vectors
  (`torch.autograd.grad(..., is_grads_batched=True)`), falling back to the loop when a layer's
  backward cannot be batched;
* "loop": T sequential backward passes with the graph retained, the way LibMTL and the
  DeepChest authors' baselines compute them; the reference, and the naive cost to compare with.

Which tensors the gradients are taken against, and how a method's aggregate is mapped back,
is the gradient space's business (mtlbench/spaces.py).
"""

from __future__ import annotations

import torch

from mtlbench.config import choices


GRAD_ENGINES = tuple(e for e in choices("grad_engine") if e != "auto")  # ("batched", "loop")


def resolve_engine(engine: str, device: torch.device, small_space: bool = False) -> str:
    """'auto' → the engine measured faster on `device` for a gradient space (`GradientSpace.small`).

    A small space's per-task backward stops after a small part of the graph (the heads, or the
    last shared layer): the T backward passes are tiny and launch-bound, and one vectorized
    backward wins on a GPU. Through the whole trunk the T passes are large, already saturate the
    GPU, and batching them only multiplies the activation memory.

    Measured (ResNet18, 14 tasks; step time loop ÷ batched, > 1 means batched is faster):

    | space | 2-core CPU, fp32, 32 px, b64 | H100, bf16, 224 px, b128 |
    |---|---|---|
    | shared_params (MGDA, PCGrad, CAGrad) | 0.79–0.83 | 0.85–0.87, and 3.5× the memory |
    | shared_features (MGDA-UB) | 1.00 | 1.27 |
    | last_shared_layer (GradNorm) | 0.83 | 1.10 |

    (docs/step_cost_cpu.md, docs/step_cost_h100.md). So: batched only on CUDA and only for the
    small spaces; the loop everywhere else. The resolved name is what the run records.
    """
    if not isinstance(small_space, bool):
        raise TypeError(f"small_space must be a GradientSpace's `small` (a bool), got {small_space!r}")
    if engine == "auto":
        return "batched" if device.type == "cuda" and small_space else "loop"
    if engine not in GRAD_ENGINES:
        raise ValueError(f"unknown gradient engine {engine!r}; valid: auto, {', '.join(GRAD_ENGINES)}")
    return engine


def per_task_gradients(
    losses: torch.Tensor, space: list[torch.Tensor], small_space: bool = False, engine: str = "batched"
) -> torch.Tensor:
    """(T, P) matrix (float32 at least) whose row t is ∇ L_t with respect to the tensors `space`,
    flattened and concatenated; detached. `small_space` is the space's `GradientSpace.small`.

    The Jacobian is allocated once and filled block by block (batched) or row by row (loop),
    never assembled by concatenating copies.
    """
    if resolve_engine(engine, losses.device, small_space) == "batched":
        try:
            return _batched(losses, space)
        except torch.OutOfMemoryError:  # a result to record, not a reason to switch engines
            raise
        except RuntimeError:  # a layer without a batching rule for its backward
            pass
    return _loop(losses, space)


def _batched(losses: torch.Tensor, space: list[torch.Tensor]) -> torch.Tensor:
    t = losses.shape[0]
    basis = torch.eye(t, dtype=losses.dtype, device=losses.device)
    blocks = list(
        torch.autograd.grad(
            losses, space, grad_outputs=basis, retain_graph=True, is_grads_batched=True, allow_unused=True
        )
    )
    jacobian = _new_jacobian(losses, space)
    _copy_blocks(jacobian, blocks, space)
    return jacobian


def _loop(losses: torch.Tensor, space: list[torch.Tensor]) -> torch.Tensor:
    jacobian = _new_jacobian(losses, space)
    for t in range(losses.shape[0]):  # only one task's gradient exists outside the Jacobian at a time
        _copy_blocks(
            jacobian[t], list(torch.autograd.grad(losses[t], space, retain_graph=True, allow_unused=True)), space
        )
    return jacobian


def _new_jacobian(losses: torch.Tensor, space: list[torch.Tensor]) -> torch.Tensor:
    size = (losses.shape[0], sum(p.numel() for p in space))
    return losses.new_empty(size, dtype=torch.promote_types(losses.dtype, torch.float32))


def _copy_blocks(target: torch.Tensor, blocks: list[torch.Tensor | None], space: list[torch.Tensor]) -> None:
    """Copy per-parameter gradients (each (*lead, *p.shape), any memory layout, or None for zero) into
    consecutive slices of `target` (*lead, P), in logical order, dropping each block once copied."""
    lead, offset = target.shape[:-1], 0
    for i, p in enumerate(space):
        part = target[..., offset : offset + p.numel()]
        if blocks[i] is None:
            part.zero_()
        else:
            part.view(*lead, *p.shape).copy_(blocks[i])
        blocks[i] = None
        offset += p.numel()
