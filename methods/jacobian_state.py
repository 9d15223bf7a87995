"""State the size of the per-task Jacobian (T, P), known only at the first step.

DB-MTL's gradient EMA and ExcessMTL's squared-gradient sums have one row per task and one column
per shared parameter. P is unknown when the method is built, so such a buffer is registered
empty and takes the Jacobian's shape, dtype and device at the first step; a checkpoint restored
into a fresh method gives the empty buffer the saved shape before torch copies the values in.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from mtlbench.methods.base import Method


class JacobianStateMethod(Method):
    """A Method with buffers of the Jacobian's shape, named in `jacobian_buffers`, created on first use."""

    jacobian_buffers: ClassVar[tuple[str, ...]] = ()

    def prepare(self) -> None:
        """An empty buffer per name in `jacobian_buffers`, sized at the first step."""
        for name in self.jacobian_buffers:
            self.register_buffer(name, torch.zeros(0))

    def jacobian_buffer(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The buffer `name`, first made zeros of `like`'s shape, dtype and device if it is still empty."""
        buffer = getattr(self, name)
        if buffer.shape != like.shape or buffer.dtype != like.dtype or buffer.device != like.device:
            if buffer.numel() != 0:
                raise ValueError(
                    f"{type(self).__name__}.{name} holds a {tuple(buffer.shape)} {buffer.dtype} state on "
                    f"{buffer.device}; this step's per-task gradients are {tuple(like.shape)} {like.dtype} "
                    f"on {like.device}"
                )
            buffer = torch.zeros_like(like)
            setattr(self, name, buffer)
        return buffer

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in self.jacobian_buffers:
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
