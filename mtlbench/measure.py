"""Cost measurement: device-synchronized timing, peak CUDA memory, peak process RSS."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def synchronize(device: torch.device) -> None:
    """Wait for queued work on `device` so a timer reads real elapsed time."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    """A perf_counter reading taken after the device has finished its queued work."""
    synchronize(device)
    return time.perf_counter()


def reset_peaks(device: torch.device) -> str:
    """Reset the peak-memory counters; returns the scope the RSS peak will have ('run'|'process')."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        # Linux ≥ 4.0: writing 5 resets the process's peak RSS (VmHWM) to its current RSS.
        _CLEAR_REFS.write_text("5")
        return "run"
    except OSError:
        return "process"


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB since the last reset (or process start)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def peak_cuda_mb(device: torch.device) -> float | None:
    """torch.cuda.max_memory_allocated in MiB since the last reset; None off CUDA."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
