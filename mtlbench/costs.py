"""Cost measurement: device-synchronized timing, process CPU time, peak CUDA memory, peak process RSS.

Whether other processes disturbed the timings: mtlbench.machine_load."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import NamedTuple

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


class StepTimes(NamedTuple):
    """What `StepTimer.collect` returns, one entry per step: the step's time (device time on CUDA,
    wall time on the CPU), the method's own part of it, and the process CPU time (user + system,
    every thread) the step took on the host."""

    steps: list[float]
    method: list[float]
    cpu: list[float]


class StepTimer:
    """Per-step times of the whole step and of the method's own part, without a host sync per step,
    and the process CPU time of each step.

    On CUDA each mark records an event on the current stream; the times are read once, in
    `collect` (one synchronization per epoch). On the CPU, work is synchronous and marks read
    `time.perf_counter` directly. `start` and `end` also read `time.process_time` (the host's CPU
    time; on CUDA it is the host's share of the step, not the device's). Call `start`, optionally
    `method_start`/`method_end`, then `end` once per step.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._marks: list[dict[str, object]] = []
        self._current: dict[str, object] = {}

    def _mark(self) -> object:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self) -> None:
        """The step begins."""
        self._current = {"cpu_start": time.process_time(), "start": self._mark()}

    def method_start(self) -> None:
        """The method's own work (per-task gradients, its computation, a re-evaluation) begins.

        A step may have several such intervals; the method's time is their sum."""
        self._current.setdefault("method", []).append([self._mark()])  # type: ignore[union-attr]

    def method_end(self) -> None:
        """The method's own work ends."""
        self._current["method"][-1].append(self._mark())  # type: ignore[index]

    def end(self) -> None:
        """The step ends."""
        self._current["end"] = self._mark()
        self._current["cpu_end"] = time.process_time()
        self._marks.append(self._current)
        self._current = {}

    def _seconds(self, a: object, b: object) -> float:
        if self.cuda:
            return a.elapsed_time(b) / 1000.0  # type: ignore[attr-defined]
        return float(b) - float(a)  # type: ignore[arg-type]

    def collect(self) -> StepTimes:
        """(step seconds, method seconds, CPU seconds) of the steps since the last collect; syncs once on CUDA."""
        if self.cuda and self._marks:
            self._marks[-1]["end"].synchronize()  # type: ignore[attr-defined]
        steps = [self._seconds(m["start"], m["end"]) for m in self._marks]
        method = [sum(self._seconds(a, b) for a, b in m.get("method", [])) for m in self._marks]  # type: ignore[attr-defined]
        cpu = [float(m["cpu_end"]) - float(m["cpu_start"]) for m in self._marks]  # type: ignore[arg-type]
        self._marks = []
        return StepTimes(steps, method, cpu)
