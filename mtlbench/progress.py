"""Rich progress display for a sweep: sweep, epoch and step bars, plus dataset work."""

from __future__ import annotations

import time
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _bars(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=not enabled or not console.is_terminal,
        transient=False,
    )


def _progress_factory(
    progress: Progress, console: Console, plain: bool, description: str, total: int
) -> Callable[[int], None]:
    """A ProgressFactory callback: a bar on a terminal, one plain line otherwise."""
    task = progress.add_task(description, total=total, info="")
    if plain:
        console.print(f"{description}: {total} items", highlight=False)

    def advance(n: int = 1) -> None:
        progress.advance(task, n)
        if progress.tasks[task].finished:
            progress.update(task, visible=False)

    return advance


class DataDisplay:
    """Progress bars for dataset work alone (`mtlbench data`): a ProgressFactory."""

    def __init__(self, console: Console, enabled: bool = True):
        self.console = console
        self.plain = enabled and not console.is_terminal
        self.progress = _bars(console, enabled)

    def __enter__(self) -> "DataDisplay":  # SweepDisplay inherits this
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, description: str, total: int) -> Callable[[int], None]:
        return _progress_factory(self.progress, self.console, self.plain, description, total)

    def warn(self, text: str) -> None:
        """One warning line on the console (stdout: stderr is kept for the one line of an error)."""
        self.console.print(f"warning: {text}", style="yellow", markup=False, highlight=False, soft_wrap=True)


class SweepDisplay(DataDisplay):
    """Three bars (sweep / epoch / step) that implement train.RunReporter and a ProgressFactory.

    When the output is not a terminal (CI logs, a redirected file) the bars are replaced by one
    plain line per epoch and per dataset step, so a long job is never silent.
    """

    def __init__(self, console: Console, total_runs: int, enabled: bool = True):
        super().__init__(console, enabled)
        self.label = ""
        self.sweep = self.progress.add_task("sweep", total=total_runs, info="")
        self.epoch = self.progress.add_task("epoch", total=1, visible=False, info="")
        self.step = self.progress.add_task("step", total=1, visible=False, info="")

    # RunReporter
    def start_run(self, label: str, epochs: int, steps: int, first_epoch: int = 0) -> None:
        """Reset the epoch and step bars for a new run (`first_epoch` > 0: resumed from a checkpoint)."""
        self.label = label
        self.progress.update(self.sweep, info=label)
        self.progress.reset(
            self.epoch, total=epochs, completed=first_epoch, visible=True, description=f"epochs ({label})", info=""
        )
        if self.plain and first_epoch:
            restored = "epoch 1" if first_epoch == 1 else f"epochs 1–{first_epoch}"
            self.console.print(f"{label}: {restored} restored from the checkpoint", highlight=False, soft_wrap=True)
        self.progress.reset(self.step, total=steps, visible=True, description="steps", info="")

    def advance_step(self) -> None:
        """One training step done."""
        self.progress.advance(self.step)

    def end_epoch(self, epoch: int, val_auroc: float) -> None:
        """One epoch done; show its validation AUROC."""
        self.progress.advance(self.epoch)
        self.progress.update(self.epoch, info=f"val AUROC {val_auroc:.3f}")
        if self.plain:
            task = self.progress.tasks[self.epoch]
            self.console.print(
                f"{self.label}: epoch {epoch + 1}/{task.total:.0f}, val AUROC {val_auroc:.3f}, "
                f"{task.elapsed or 0:.0f} s",
                highlight=False,
                soft_wrap=True,
            )
        self.progress.reset(self.step)

    def end_run(self) -> None:
        """One run done (complete, failed, diverged or skipped)."""
        self.progress.advance(self.sweep)
        if self.progress.tasks[self.sweep].finished:
            self.progress.update(self.epoch, visible=False)
            self.progress.update(self.step, visible=False)
            self.progress.update(self.sweep, info="done")


class WorkersDisplay(DataDisplay):
    """One display for several workers (mtlbench/workers.py): a sweep bar of cells done, and per worker a bar
    of its current run's steps with its epoch and validation AUROC. Not on a terminal: one plain line per
    epoch, prefixed by the worker."""

    def __init__(self, console: Console, total_runs: int, workers: dict[int, str], enabled: bool = True):
        super().__init__(console, enabled)
        self.sweep = self.progress.add_task("sweep", total=total_runs, info="")
        self.bars = {
            w: self.progress.add_task(f"w{w}", total=1, info=f"{name}: starting") for w, name in workers.items()
        }
        self.runs: dict[int, tuple[str, int, float]] = {}  # worker → (label, epochs, start time)
        self.data: dict[tuple[int, int], int] = {}
        self.warned: set[str] = set()

    def cell_done(self) -> None:
        """One cell of the sweep ended (in whichever worker)."""
        self.progress.advance(self.sweep)

    def event(self, kind: str, worker: int, *payload: object) -> None:
        """Show one worker event (see workers.EventReporter)."""
        bar = self.bars[worker]
        if kind == "start":
            label, epochs, steps, first = payload
            self.runs[worker] = (str(label), int(epochs), time.monotonic())
            self.progress.reset(
                bar, total=steps, description=f"w{worker} {label}"[:28], info=f"epoch {int(first) + 1}/{epochs}"
            )
            if self.plain and first:
                self.console.print(
                    f"w{worker} {label}: resumed at epoch {int(first) + 1}", highlight=False, soft_wrap=True
                )
        elif kind == "steps":
            self.progress.advance(bar, int(payload[0]))
        elif kind == "epoch":
            epoch, auroc = int(payload[0]), float(payload[1])
            label, epochs, started = self.runs.get(worker, ("", 0, time.monotonic()))
            self.progress.reset(bar, info=f"epoch {min(epoch + 2, epochs)}/{epochs} · val AUROC {auroc:.3f}")
            if self.plain:
                self.console.print(
                    f"w{worker} {label}: epoch {epoch + 1}/{epochs}, val AUROC {auroc:.3f}, "
                    f"{time.monotonic() - started:.0f} s",
                    highlight=False,
                    soft_wrap=True,
                )
        elif kind == "end_run":
            self.progress.update(bar, info="")
        elif kind == "data":
            key, description, total = payload
            self.data[(worker, int(key))] = self.progress.add_task(
                f"w{worker} {description}"[:28], total=total, info=""
            )
            if self.plain:
                self.console.print(f"w{worker} {description}: {total} items", highlight=False)
        elif kind == "data_step":
            task = self.data.get((worker, int(payload[0])))
            if task is not None:
                self.progress.advance(task, int(payload[1]))
                if self.progress.tasks[task].finished:
                    self.progress.update(task, visible=False)
        elif kind == "warn" and payload[0] not in self.warned:  # every worker loads the same data
            self.warned.add(str(payload[0]))
            self.warn(str(payload[0]))
