"""A sweep: every method × seed on one dataset with one protocol, sharing the loaded data.

What to run (SweepPlan) is parsed and checked in mtlbench/plan.py, without torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from mtlbench.config import RunConfig
from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory, labelled, positives
from mtlbench.image_split import random_image_split
from mtlbench.environment import environment
from mtlbench.errors import UserError, interrupted_means
from mtlbench.model import trunk
from mtlbench.plan import STL, SweepPlan, check_methods_fit
from mtlbench.registry import DATASETS
from mtlbench.results.store import Force, ResultsStore
from mtlbench.results.check import check_intact
from mtlbench.results.leases import Owner, this_process
from mtlbench.training import RunReporter, RunResult, release_memory, resolve_runtime, train_run, warm_up
from mtlbench.training.tensorboard_sink import TensorBoardLog
from mtlbench.single_task_init import needs_single_task_runs, with_single_task_init

DATA_INTERRUPTED = (
    "the data generation was not finished and no run was started; rerun the same command to "
    "finish it (a partly built image cache resumes where it stopped)"
)


def load_dataset(config: RunConfig, progress: ProgressFactory) -> DatasetBundle:
    """Load (generating if needed) the dataset a config asks for."""
    loader = DATASETS.get(config.dataset)
    data_dir = Path(config.data_dir).expanduser()
    if data_dir.exists() and not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir} is not a directory")
    data = loader(data_request(config, data_dir), progress)
    if config.split == "random-image":
        data = random_image_split(data, config.data_seed)
    return with_cross_test(data, config, progress) if config.test_dataset else data


def with_cross_test(data: DatasetBundle, config: RunConfig, progress: ProgressFactory) -> DatasetBundle:
    """`data` with `--test-dataset`'s test split attached (its own official split, labels as it gives them for
    the 14 tasks: NaN for a finding it does not label), and what it is recorded in the data's info."""
    other_dir = Path(config.test_data_dir or config.data_dir).expanduser()
    other_config = replace(
        config, dataset=config.test_dataset, split="official", synth_missing=0.0, synth_shortcuts=False
    )
    other = DATASETS.get(config.test_dataset)(data_request(other_config, other_dir), progress)
    if other.task_names != data.task_names:
        raise UserError(f"--test-dataset {config.test_dataset} has other tasks than {data.name}")
    test = other.test
    info = {
        "dataset": config.test_dataset,
        "source": other.info.get("source", str(other_dir)),
        "fingerprint": other.info.get("fingerprint", ""),
        "images": len(test),
        "labelled": dict(zip(other.task_names, labelled(test.labels).sum(axis=0).tolist())),
        "positives": dict(zip(other.task_names, positives(test.labels).tolist())),
    }
    return replace(data, cross_tests={config.test_dataset: test}, info={**data.info, "cross_test": info})


def data_request(config: RunConfig, data_dir: Path | None = None, **overrides: Any) -> DataRequest:
    """The DataRequest a config makes (`overrides` set DataRequest-only fields such as spot_check)."""
    return DataRequest(
        data_dir=data_dir if data_dir is not None else Path(config.data_dir).expanduser(),
        image_size=config.image_size,
        data_seed=config.data_seed,
        val_fraction=config.val_fraction,
        synth_images=config.synth_images,
        synth_test_images=config.synth_test_images,
        views=config.views,
        synth_missing=config.synth_missing,
        synth_shortcuts=config.synth_shortcuts,
        uncertain=config.uncertain,
        allow_missing=config.allow_missing,
        cache_dir=Path(config.cache_dir).expanduser() if config.cache_dir else None,
        download=config.download,
        **overrides,
    )


@dataclass(frozen=True)
class SweepSession:
    """What every cell of a sweep shares: the resolved base config (with the data's fingerprint), the
    loaded data, the environment, the device, this process's identity as a claimant and where each run's
    TensorBoard view goes (`--tensorboard`; None: nowhere)."""

    base: RunConfig
    data: DatasetBundle
    env: dict[str, Any]
    device: torch.device
    owner: Owner
    tensorboard: TensorBoardLog | None = None


def open_session(
    base: RunConfig, methods: Sequence[str], results: Path, display: Any, tensorboard: Path | None = None
) -> SweepSession:
    """Check what can fail before any training (settings, database, pretrained weights), load the data
    once and warm up: everything a sweep does before its first cell. With `tensorboard`, every run of the
    session also writes a TensorBoard view under that folder."""
    # The gradient engine stays as asked: "auto" resolves per method (its gradient space), in train_run.
    base = replace(resolve_runtime(base), grad_engine=base.grad_engine)
    device = torch.device(base.device)
    check_methods_fit(base, methods)  # the CLI checked it already; kept for other callers
    ResultsStore.check_writable(results)  # before minutes of data work
    if Path(results).is_file():
        with ResultsStore(results) as store:
            check_intact(store, hollow_ok=True)  # a complete row without metrics: claim_run trains it again
    env = environment(device)
    if base.pretrained != "none":
        trunk(base.arch, base.pretrained)  # fail before the sweep if the weights cannot be loaded
    with interrupted_means(DATA_INTERRUPTED):
        data = load_dataset(base, display)
    warn = getattr(display, "warn", lambda text: print(f"warning: {text}"))
    for line in data.info.get("warnings", []):  # said before any training (stored with each run, too)
        warn(line)
    base = replace(base, data_fingerprint=data.info.get("fingerprint", ""))
    if len(data.train) >= 2:
        warm_up(base, data, device)
    views = TensorBoardLog(Path(tensorboard).expanduser(), warn) if tensorboard is not None else None
    return SweepSession(base, data, env, device, this_process(), views)


def run_cells(
    session: SweepSession,
    cells: Sequence[RunConfig],
    store: ResultsStore,
    display: Any,
    force: "Force" = False,
    labels: Sequence[str] | None = None,
    on_outcome: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Train each cell in turn into `store` (claimed, resumed or skipped as `train_run` decides);
    `labels`, one per cell, are added to what the display calls each run; `on_outcome` hears each cell's end."""
    outcomes = []
    for i, cell in enumerate(cells):
        reporter: RunReporter = display if not labels else Relabelled(display, labels[i])
        outcome = train_run(
            cell,
            session.data,
            store,
            session.env,
            reporter,
            force=force,
            owner=session.owner,
            tensorboard=session.tensorboard,
        )
        outcomes.append(outcome)
        release_memory(session.device)  # a failed run's model and optimizer go before the next one starts
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


@dataclass(frozen=True)
class Relabelled:
    """A RunReporter that shows each run's label with `suffix` added (e.g. which trial it is)."""

    inner: Any
    suffix: str

    def start_run(self, label: str, epochs: int, steps: int, first_epoch: int = 0) -> None:
        """The inner reporter's, with the longer label."""
        if self.inner is not None:
            self.inner.start_run(f"{label} {self.suffix}", epochs, steps, first_epoch)

    def advance_step(self) -> None:
        """The inner reporter's."""
        if self.inner is not None:
            self.inner.advance_step()

    def end_epoch(self, epoch: int, val_auroc: float) -> None:
        """The inner reporter's."""
        if self.inner is not None:
            self.inner.end_epoch(epoch, val_auroc)

    def end_run(self) -> None:
        """The inner reporter's."""
        if self.inner is not None:
            self.inner.end_run()


def run_sweep(
    plan: SweepPlan,
    results: Path,
    display: Any,
    force: "Force" = False,
    on_ready: Callable[[], None] | None = None,
    on_outcome: Callable[[RunResult], None] | None = None,
    tensorboard: Path | None = None,
) -> list[RunResult]:
    """Run every cell of `plan` into the database at `results`; failures are recorded, not raised. The single-task
    runs come first: a method initialised from them (deepchest's init=stl) reads them from the database, waiting
    for those another process (a worker beside this one) is still training. `on_ready` is called once the data
    is loaded, `on_outcome` after each cell. With `tensorboard`, each run also writes its TensorBoard view under
    that folder."""
    session = open_session(plan.base, plan.methods, results, display, tensorboard)
    if on_ready is not None:
        on_ready()
    plan = replace(plan, base=session.base)
    with ResultsStore(results) as store:
        cells = plan.cells()
        single = [c for c in cells if c.method == STL]
        outcomes = run_cells(session, single, store, display, force=force, on_outcome=on_outcome)
        rest = [c for c in cells if c.method != STL]
        if any(needs_single_task_runs(c) for c in rest):
            wait_for_claims(store, [o.run_id for o in outcomes if o.status == "busy"])
        rest = [with_single_task_init(c, store) for c in rest]
        return outcomes + run_cells(session, rest, store, display, force=force, on_outcome=on_outcome)


def wait_for_claims(store: ResultsStore, run_ids: Sequence[int], poll_s: float = 5.0) -> None:
    """Return once none of `run_ids` is being run by a live process (each ended, or its claim went stale)."""
    owner = this_process()
    pending = list(run_ids)
    while pending:
        pending = [r for r in pending if store.claim_is_alive(r, owner)]
        if pending:
            time.sleep(poll_s)
