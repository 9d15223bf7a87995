"""An extra view of runs: per-epoch scalars and each run's config as TensorBoard event files (`--tensorboard`).

The results database stays the source of truth. A TensorBoard write that fails never fails a run: the
sweep warns once and the run goes on without its TensorBoard view. tensorboard is an optional package,
imported only when a run's first epoch is written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mtlbench.config import RunConfig
from mtlbench.training.sink import CompletedRun, EpochRecord

HASH_CHARS = 8  # of the config hash, in a run's folder name


@dataclass
class TensorBoardLog:
    """Where a sweep's TensorBoard views go, one event folder per run under `root`; `warn` says, once per
    sweep, that events could not be written."""

    root: Path
    warn: Callable[[str], None]
    warned: bool = False

    def run_dir(self, config: RunConfig) -> Path:
        """`<root>/<dataset>/<method>-seed<seed>[-<tasks>]-<config hash>`: one folder per cell, the same
        folder when the cell resumes."""
        subset = f"-{config.tasks.replace(',', '+')}" if config.tasks else ""
        name = f"{config.method}-seed{config.seed}{subset}-{config.config_hash()[:HASH_CHARS]}"
        return self.root / _safe(config.dataset) / _safe(name)

    def run_view(self, config: RunConfig, tasks: tuple[str, ...], config_json: str) -> TensorBoardSink:
        """The RunSink that writes one run's view (close it when the run ends)."""
        return TensorBoardSink(self, self.run_dir(config), tasks, config_json)

    def failed(self, where: Path, exc: BaseException) -> None:
        """A write to `where` failed: warn, unless this sweep has warned already."""
        if self.warned:
            return
        self.warned = True
        self.warn(
            f"TensorBoard events could not be written to {where} ({type(exc).__name__}: {exc}); the run goes on "
            "and the results database has all its numbers; further TensorBoard failures of this sweep are not shown"
        )


@dataclass
class TensorBoardSink:
    """A RunSink writing one run's epochs to its event folder. The writer opens at the first epoch this
    attempt trains, with that epoch as its purge step: a resumed run drops what an earlier attempt wrote
    from there on (as the database rewinds to its checkpoint) and never shows an epoch twice."""

    log: TensorBoardLog
    folder: Path
    tasks: tuple[str, ...]
    config_json: str
    writer: Any = field(default=None, init=False)
    broken: bool = field(default=False, init=False)

    def epoch(self, record: EpochRecord) -> None:
        """The epoch's scalars; the config too when the run starts at epoch 0."""
        self._write(lambda writer: write_epoch(writer, record, self.tasks), record.epoch)

    def diverged(self, step: int, diagnostics: dict[str, float]) -> None:
        """Nothing more to show: the last epoch was written."""

    def complete(self, result: CompletedRun) -> None:
        """Nothing more to show: the test result is in the database."""

    def close(self) -> None:
        """Flush and close the event file (a failure is warned about, never raised)."""
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        try:
            writer.close()
        except Exception as exc:  # the view must never fail the run
            self.log.failed(self.folder, exc)

    def _write(self, write: Callable[[Any], None], epoch: int) -> None:
        if self.broken:
            return
        try:
            if self.writer is None:
                self.writer = open_writer(self.folder, epoch)
                if epoch == 0:
                    self.writer.add_text("config", markdown_json(self.config_json), 0)
            write(self.writer)
            self.writer.flush()  # a live view; and the writer's thread raises its errors here
        except Exception as exc:  # the view must never fail the run
            self.broken = True
            self.log.failed(self.folder, exc)


def open_writer(folder: Path, first_epoch: int) -> Any:
    """A SummaryWriter on `folder` whose readers drop every event at `first_epoch` or later written before."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(folder), purge_step=first_epoch)


def write_epoch(writer: Any, record: EpochRecord, tasks: tuple[str, ...]) -> None:
    """One epoch's scalars at step = epoch: validation AUROC (per task, mean), training loss (per task, and
    their unweighted sum), the epoch's mean task weights (when the method has weights), the median step time."""
    step = record.epoch
    writer.add_scalar("val_auroc/mean", float(record.val.mean()["auroc"]), step)
    for task, value in zip(tasks, record.val.auroc):
        writer.add_scalar(f"val_auroc/{task}", float(value), step)
    writer.add_scalar("train_loss/total", float(np.nansum(record.train_loss)), step)
    for task, value in zip(tasks, record.train_loss):
        writer.add_scalar(f"train_loss/{task}", float(value), step)
    if record.mean_weights is not None:
        for task, value in zip(tasks, record.mean_weights):
            writer.add_scalar(f"weight/{task}", float(value), step)
    writer.add_scalar("time/median_step_s", float(record.median_step_s), step)


def markdown_json(config_json: str) -> str:
    """The config, indented JSON as a Markdown code block (TensorBoard renders text summaries as Markdown)."""
    pretty = json.dumps(json.loads(config_json), indent=2, sort_keys=True)
    return "\n".join("    " + line for line in pretty.splitlines())


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", name)
