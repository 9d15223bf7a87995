"""What a command prints about the runs it finished, and SIGTERM handled like Ctrl-C."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator, Sequence

from rich.console import Console

FAILED_STATUSES = ("failed", "diverged", "oom")  # any of these in a sweep: exit code 1


def print_notes(outcomes: Sequence, console: Console) -> None:
    """Each run's note (e.g. a resume, an image count) and each cell left to another process."""
    for o in outcomes:
        if o.note:
            console.print(f"[yellow]{o.method} seed {o.seed}: {o.note}[/yellow]", highlight=False)
        if o.status == "busy":
            console.print(
                f"[yellow]{o.method} seed {o.seed}: left to the process that is running it[/yellow]", highlight=False
            )


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler preempting the job): handled like Ctrl-C, the run is marked interrupted."""


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise Terminated(signum)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM (a scheduler's preemption) raises Terminated, handled like Ctrl-C."""
    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
