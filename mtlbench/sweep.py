"""A sweep: every method × seed on one dataset with one protocol, sharing the loaded data.

What to run (SweepPlan) is parsed and checked in mtlbench/plan.py, without torch.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mtlbench.config import RunConfig
from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory
from mtlbench.environment import environment
from mtlbench.errors import UserError, interrupted_means
from mtlbench.model import resnet18_trunk
from mtlbench.plan import SweepPlan, check_methods_fit
from mtlbench.registry import DATASETS
from mtlbench.results.store import ResultsStore
from mtlbench.results.check import check_intact
from mtlbench.results.leases import this_process
from mtlbench.training import RunReporter, RunResult, release_memory, resolve_runtime, train_run, warm_up

DATA_INTERRUPTED = ("the data generation was not finished and no run was started; rerun the same command to "
                    "finish it (a partly built image cache resumes where it stopped)")


def load_dataset(config: RunConfig, progress: ProgressFactory) -> DatasetBundle:
    """Load (generating if needed) the dataset a config asks for."""
    loader = DATASETS.get(config.dataset)
    data_dir = Path(config.data_dir).expanduser()
    if data_dir.exists() and not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir} is not a directory")
    return loader(data_request(config, data_dir), progress)


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
        allow_missing=config.allow_missing,
        cache_dir=Path(config.cache_dir).expanduser() if config.cache_dir else None,
        download=config.download,
        **overrides,
    )


def run_sweep(
    plan: SweepPlan,
    results: Path,
    display: Any,
    force: bool = False,
) -> list[RunResult]:
    """Run every cell of `plan` into the database at `results`; failures are recorded, not raised."""
    # The gradient engine stays as asked: "auto" resolves per method (its gradient space), in train_run.
    base = replace(resolve_runtime(plan.base), grad_engine=plan.base.grad_engine)
    device = torch.device(base.device)
    plan = replace(plan, base=base)
    check_methods_fit(base, plan.methods)  # the CLI checked it already; kept for other callers
    ResultsStore.check_writable(results)  # before minutes of data work
    if Path(results).is_file():
        with ResultsStore(results) as store:
            check_intact(store, hollow_ok=True)  # a complete row without metrics: claim_run trains it again
    env = environment(device)
    if base.pretrained != "none":
        resnet18_trunk(base.pretrained)  # fail before the sweep if the weights cannot be loaded
    with interrupted_means(DATA_INTERRUPTED):
        data = load_dataset(base, display)
    for line in data.info.get("warnings", []):  # said before any training (stored with each run, too)
        getattr(display, "warn", lambda text: print(f"warning: {text}"))(line)
    plan = replace(plan, base=replace(base, data_fingerprint=data.info.get("fingerprint", "")))
    if len(data.train) >= 2:
        warm_up(plan.base, data, device)
    owner = this_process()
    with ResultsStore(results) as store:
        outcomes = []
        for cell in plan.cells():
            reporter: RunReporter = display
            outcomes.append(train_run(cell, data, store, env, reporter, force=force, owner=owner))
            release_memory(device)  # a failed run's model and optimizer go before the next one starts
        return outcomes
