"""Rich progress display for a sweep: sweep, epoch and step bars, plus dataset work."""

from __future__ import annotations

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
