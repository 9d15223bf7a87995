"""Several worker processes on one sweep: one per GPU (`run --devices 0,1`) or per share of the CPU cores
(`run --workers N`).

Each worker is a spawned process that runs the whole sweep into the same results database; the claims
(results/leases.py) make each cell run once, as they do for several `mtlbench run` commands: a worker
skips a cell another holds and takes the next. Workers send their progress as events on a queue and the
parent shows one display. Each worker is pinned to its own cores (and, with --devices, sees one GPU as
cuda:0): on the 2-core development machine two sweeps sharing the cores ran 10× slower than one, and
pinning also keeps each run's measured machine load (machine_load.py: the load on the CPUs this process
may use) to what the worker itself saw.

Ctrl-C or SIGTERM to the parent stops every worker once (SIGTERM, handled like Ctrl-C: the run is stored
as interrupted and resumes from its checkpoint on the next `run`); workers ignore the terminal's SIGINT so
that none is interrupted twice. No torch at import: the spawned children import this module first.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mtlbench.errors import UserError

if TYPE_CHECKING:
    from mtlbench.plan import SweepPlan
    from mtlbench.results.store import Force
    from mtlbench.training import RunResult

STOP_GRACE_S = 120.0  # how long stopped workers get to store their run as interrupted before they are killed
STEP_FLUSH_S = 0.25  # a worker sends its step count at most this often


@dataclass(frozen=True)
class WorkerSlot:
    """Where one worker runs: its number (1-based), the cores it is pinned to, the GPU it sees as cuda:0."""

    index: int
    cpus: tuple[int, ...]
    gpu: str | None = None

    def describe(self) -> str:
        """E.g. 'worker 2 (GPU 1, 8 cores)'."""
        cores = f"{len(self.cpus)} core{'s' if len(self.cpus) > 1 else ''}"
        return f"worker {self.index} ({f'GPU {self.gpu}, ' if self.gpu is not None else ''}{cores})"


def allowed_cpus() -> list[int]:
    """The cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def plan_slots(workers: int | None, devices: str | None, cpus: list[int] | None = None) -> list[WorkerSlot]:
    """The worker slots `--workers N` or `--devices 0,1,…` ask for: the cores split into contiguous shares,
    one GPU each with --devices (numbered as this process sees them: CUDA_VISIBLE_DEVICES is honoured)."""
    cpus = cpus if cpus is not None else allowed_cpus()
    if workers is not None and devices is not None:
        raise UserError(
            "--workers and --devices both start workers: give --devices 0,1,… on a GPU machine, "
            "--workers N on a CPU-only one"
        )
    gpus: list[str | None]
    if devices is not None:
        parts = [p.strip() for p in devices.split(",") if p.strip()]
        if not parts or not all(p.isdigit() for p in parts) or len(set(parts)) != len(parts):
            raise UserError(f"--devices must be distinct GPU numbers such as 0,1,2,3, got {devices!r}")
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        if visible and max(int(p) for p in parts) >= len(visible):
            raise UserError(
                f"--devices {devices}: this process sees {len(visible)} GPU(s) "
                f"(CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}), numbered 0–{len(visible) - 1}"
            )
        gpus = [visible[int(p)] if visible else p for p in parts]
    elif workers is not None:
        if workers < 1:
            raise UserError(f"--workers must be at least 1, got {workers}")
        gpus = [None] * workers
    else:
        raise UserError("plan_slots needs --workers or --devices")
    if len(gpus) > len(cpus):
        raise UserError(
            f"{len(gpus)} workers need a core each; this process may use {len(cpus)} "
            f"({', '.join(map(str, cpus))}): give at most --workers {len(cpus)}"
        )
    share, extra = divmod(len(cpus), len(gpus))
    slots, start = [], 0
    for i, gpu in enumerate(gpus):
        size = share + (1 if i < extra else 0)
        slots.append(WorkerSlot(i + 1, tuple(cpus[start : start + size]), gpu))
        start += size
    return slots


def check_devices_exist(slots: list[WorkerSlot], device: str) -> None:
    """Refuse --devices without enough GPUs or with a --device other than auto/cuda, and --workers where runs
    would go to a GPU (all of them on the same one): imports torch."""
    import torch

    count = torch.cuda.device_count()
    gpus = [s for s in slots if s.gpu is not None]
    if not gpus:
        if device.startswith("cuda") or (device == "auto" and count):
            raise UserError(
                "--workers splits the CPU cores and every worker would train on GPU 0: use --devices "
                "0,1,… for one worker per GPU, or --device cpu"
            )
        return
    if device not in ("auto", "cuda"):
        raise UserError(f"--devices gives each worker its GPU as cuda:0: drop --device {device}")
    if count == 0:
        raise UserError("--devices needs CUDA GPUs and this machine has none: use --workers N to split the CPU cores")
    if not os.environ.get("CUDA_VISIBLE_DEVICES") and max(int(s.gpu) for s in gpus) >= count:
        raise UserError(
            f"--devices {','.join(str(s.gpu) for s in gpus)}: this machine has {count} GPU(s), numbered 0–{count - 1}"
        )


class EventReporter:
    """A worker's RunReporter and ProgressFactory: every call becomes an event (kind, worker, …) on the queue."""

    def __init__(self, events: Any, worker: int):
        self.events, self.worker = events, worker
        self._steps, self._sent_at, self._data = 0, 0.0, 0

    def _put(self, kind: str, *payload: Any) -> None:
        self.events.put((kind, self.worker, *payload))

    def _flush_steps(self) -> None:
        if self._steps:
            self._put("steps", self._steps)
            self._steps, self._sent_at = 0, time.monotonic()

    def start_run(self, label: str, epochs: int, steps: int, first_epoch: int = 0) -> None:
        """A run starts (or resumes at `first_epoch`)."""
        self._put("start", label, epochs, steps, first_epoch)

    def advance_step(self) -> None:
        """One training step; sent in batches, at most every STEP_FLUSH_S."""
        self._steps += 1
        if time.monotonic() - self._sent_at >= STEP_FLUSH_S:
            self._flush_steps()

    def end_epoch(self, epoch: int, val_auroc: float) -> None:
        """An epoch ends with its validation AUROC."""
        self._flush_steps()
        self._put("epoch", epoch, val_auroc)

    def end_run(self) -> None:
        """A run ends (or was skipped)."""
        self._flush_steps()
        self._put("end_run")

    def __call__(self, description: str, total: int) -> Callable[[int], None]:
        """Dataset work of `total` items: its advances become events."""
        self._data += 1
        key = self._data
        self._put("data", key, description, total)
        return lambda n=1: self._put("data_step", key, n)

    def warn(self, text: str) -> None:
        """A warning line (the parent prints each distinct one once)."""
        self._put("warn", text)


def pin(slot: WorkerSlot) -> None:
    """Confine this process to the slot's cores (and GPU); before torch is imported."""
    threads = str(len(slot.cpus))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = threads
    if slot.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot.gpu
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, slot.cpus)


def worker_main(
    plan: "SweepPlan", results: Path, force: "Force", slot: WorkerSlot, events: Any, tensorboard: Path | None = None
) -> None:
    """A worker process: pinned to its slot, runs the sweep into `results`, reports through `events`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops workers with SIGTERM, once each
    pin(slot)
    from mtlbench.commands.outcomes import sigterm_as_interrupt
    from mtlbench.errors import one_line
    from mtlbench.sweep import run_sweep

    reporter = EventReporter(events, slot.index)
    try:
        with sigterm_as_interrupt():
            run_sweep(
                plan,
                results,
                reporter,
                force=force,
                on_ready=lambda: reporter._put("ready"),
                on_outcome=lambda outcome: reporter._put("cell", outcome),
                tensorboard=tensorboard,
            )
    except KeyboardInterrupt:
        reporter._put("stopped", "interrupted")
        raise SystemExit(130) from None
    except UserError as exc:
        reporter._put("stopped", str(exc))
        raise SystemExit(2) from None
    except Exception as exc:  # noqa: BLE001  (reported to the parent as one line; the cell is already stored)
        reporter._put("stopped", one_line(exc))
        raise SystemExit(1) from None
    reporter._put("stopped", "")


@dataclass
class WorkersOutcome:
    """What the workers did: each cell's outcome (one per cell: busy only where no worker ran it) and each
    worker that stopped with an error."""

    outcomes: list["RunResult"]
    errors: dict[int, str]


def run_workers(
    plan: "SweepPlan",
    results: Path,
    slots: list[WorkerSlot],
    display: Any,
    force: bool = False,
    tensorboard: Path | None = None,
) -> WorkersOutcome:
    """Run `plan` on one worker per slot into `results`, showing events on `display` (a WorkersDisplay);
    the first worker loads (or generates) the data before the others start, so it is made once.

    A KeyboardInterrupt here (Ctrl-C, or SIGTERM raised as one) stops every worker and is raised again
    once they have stored their runs."""
    from mtlbench.results.store import now_text

    if force is True:
        force = now_text()  # each worker reruns only what ended before this sweep began
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    processes: dict[int, Any] = {}
    outcomes: dict[int, list] = {}
    errors: dict[int, str] = {}
    ready = False

    def start(slot: WorkerSlot) -> None:
        process = context.Process(
            target=worker_main,
            args=(plan, results, force, slot, events, tensorboard),
            name=f"mtlbench-worker-{slot.index}",
        )
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited: a Ctrl-C while it starts is ignored too
        try:
            process.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        processes[slot.index] = process

    def handle(event: tuple) -> None:
        nonlocal ready
        kind, worker, *payload = event
        if kind == "ready":
            ready = True
        elif kind == "cell":
            outcomes.setdefault(worker, []).append(payload[0])
            if payload[0].status != "busy":
                display.cell_done()
        elif kind == "stopped":
            if payload[0]:
                errors[worker] = payload[0]
        else:
            display.event(kind, worker, *payload)

    def drain(wait_s: float) -> None:
        try:
            handle(events.get(timeout=wait_s))
            while True:
                handle(events.get_nowait())
        except queue_module.Empty:
            pass

    try:
        start(slots[0])
        while not ready and processes[slots[0].index].is_alive():
            drain(0.2)
        drain(0.2)
        if not ready:  # the first worker could not load the data: the others would fail the same way
            raise UserError(errors.get(slots[0].index) or f"worker 1 exited with code {processes[1].exitcode}")
        for slot in slots[1:]:
            start(slot)
        while any(p.is_alive() for p in processes.values()):
            drain(0.2)
        drain(0.1)
    except BaseException:  # Ctrl-C, SIGTERM (raised as one), a SystemExit: no worker is left behind
        stop_all(processes, lambda: drain(0.2))
        raise
    finally:
        for p in processes.values():
            p.join(timeout=1)
        events.close()
    for index, process in processes.items():
        if process.exitcode not in (0, None) and index not in errors:
            errors[index] = f"exited with code {process.exitcode}" + (
                " (killed by a signal: out of host memory?)" if process.exitcode < 0 else ""
            )
    return WorkersOutcome(merge_outcomes(plan, outcomes), errors)


def stop_all(processes: dict[int, Any], pump: Callable[[], None]) -> None:
    """SIGTERM every live worker once, let them store their runs (showing their events), kill any still alive
    after STOP_GRACE_S."""
    for p in processes.values():
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while any(p.is_alive() for p in processes.values()) and time.monotonic() < deadline:
        try:
            pump()
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
            break
    for p in processes.values():
        if p.is_alive():
            p.kill()


def merge_outcomes(plan: "SweepPlan", by_worker: dict[int, list]) -> list:
    """One outcome per cell, in the sweep's order: the worker that ran it, else a busy one (another process)."""
    best: dict[int, Any] = {}
    for outcomes in by_worker.values():
        for o in outcomes:
            if o.run_id not in best or best[o.run_id].status == "busy":
                best[o.run_id] = o
    order = {m: i for i, m in enumerate(("stl", *plan.methods))}
    return sorted(best.values(), key=lambda o: (order.get(o.method, len(order)), o.seed, o.run_id))
