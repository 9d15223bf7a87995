"""What every benchmark script shares: naming the device and emitting its markdown table."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def device_label(device: torch.device) -> str:
    """The GPU's name, or the CPU and its torch thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"


def emit(lines: list[str], out: str | None) -> None:
    """Print the table and, with `out`, write it there too."""
    table = "\n".join(lines)
    print()
    print(table)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(table + "\n")
