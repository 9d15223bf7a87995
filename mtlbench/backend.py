"""How the harness drives the device: numeric precision, autocast, memory layout, cuDNN settings.

Precision is part of a run's identity (it is a hashed config field, resolved per device before
the run): a bf16 run and an fp32 run are different cells and never merged in reports.

* "fp32": float32 weights and math; on CUDA, TensorFloat-32 is switched off for matmuls and
  convolutions, so "fp32" means IEEE float32 products.
* "tf32": float32 weights, TensorFloat-32 tensor-core math in matmuls and convolutions (CUDA only).
* "bf16": float32 weights, forward under bfloat16 autocast (losses, softmax and reductions stay
  in float32 as autocast decides); per-task losses, metrics and gradients are float32.
* "auto": bf16 on CUDA, fp32 on the CPU.

On CUDA the model and its inputs use the channels_last layout and cuDNN autotunes its
convolution algorithms. Both are for speed, but the kernels chosen can differ in rounding from
run to run; they are recorded with each run's environment. `--deterministic` trades that speed
for deterministic kernels where PyTorch has them.
"""

from __future__ import annotations

import contextlib
import os
from typing import ContextManager

import torch

from mtlbench.config import choices
from mtlbench.errors import UserError


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' → bf16 on CUDA, fp32 elsewhere; 'tf32' off CUDA is a UserError."""
    if name not in choices("precision"):
        raise UserError(f"unknown --precision {name!r}; valid: {', '.join(choices('precision'))}")
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name == "tf32" and device.type != "cuda":
        raise UserError("--precision tf32 is a CUDA tensor-core mode; use fp32 or bf16 on the CPU")
    return name


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The autocast context of `precision` on `device` (a no-op context unless bf16)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def configure(device: torch.device, precision: str, deterministic: bool = False) -> dict[str, bool]:
    """Set the process-wide math switches for a run of `precision`; returns what was set.

    Called at the start of every run, so each run's settings are its own, whatever ran before.
    `deterministic` asks PyTorch for deterministic kernels (`torch.use_deterministic_algorithms`,
    warning where an op has none), turns cuDNN autotuning off and sets the cuBLAS workspace that
    deterministic cuBLAS needs (effective when set before the process's first cuBLAS call, which
    the sweep's warm-up is).
    """
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if device.type != "cuda":
        return {"channels_last": False, "cudnn_benchmark": False, "tf32": False, "deterministic": deterministic}
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    return {"channels_last": True, "cudnn_benchmark": not deterministic, "tf32": tf32, "deterministic": deterministic}


def uses_channels_last(device: torch.device) -> bool:
    """Whether the model and its inputs use the channels_last layout on `device`."""
    return device.type == "cuda"


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` on `device`, in channels_last where that is the device's fast layout."""
    model = model.to(device)
    if uses_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    return model


def prepare_input(x: torch.Tensor) -> torch.Tensor:
    """A (B, C, H, W) batch in the layout the model on its device expects."""
    if uses_channels_last(x.device):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """`t` as float32 if it is a lower-precision float (bf16/fp16 under autocast), else unchanged."""
    return t.to(torch.promote_types(t.dtype, torch.float32))
