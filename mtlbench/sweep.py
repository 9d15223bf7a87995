"""A sweep: every method × seed on one dataset with one protocol, sharing the loaded data."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from mtlbench.config import RunConfig
from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory
from mtlbench.environment import environment
from mtlbench.errors import UserError, interrupted_means
from mtlbench.model import resnet18_trunk
from mtlbench.registry import DATASETS, METHODS
from mtlbench.store import ResultsStore
from mtlbench.store_check import check_intact
from mtlbench.claims import this_process
from mtlbench.train import RunReporter, RunResult, release_memory, resolve_runtime, train_run, warm_up

DATA_INTERRUPTED = ("the data generation was not finished and no run was started; rerun the same command to "
                    "finish it (a partly built image cache resumes where it stopped)")


@dataclass(frozen=True)
class SweepPlan:
    """What to run: the base config (method/seed filled per cell), methods, seeds."""

    base: RunConfig
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    method_params: dict[str, dict[str, Any]]

    def cells(self) -> list[RunConfig]:
        """One RunConfig per method × seed, methods outermost."""
        return [
            replace(self.base, method=m, seed=s, method_params=self.method_params.get(m, {}))
            for m in self.methods
            for s in self.seeds
        ]


def parse_methods(text: str) -> tuple[str, ...]:
    """'all' or a comma list of registered names (validated, order kept, duplicates dropped)."""
    names = METHODS.names() if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UserError("--methods is empty; give 'all' or names such as ew,deepchest")
    for n in names:
        METHODS.get(n)
    return tuple(dict.fromkeys(names))


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0,1,2' or '0-4' (or a mix) → distinct non-negative seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                seeds.extend(range(int(lo), int(hi) + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected integers like 0,1,2 or 0-4") from None
    if not seeds:
        raise UserError("--seeds is empty; give e.g. 0 or 0,1,2")
    bad = [s for s in seeds if s < 0 or s > 2**31 - 1]
    if bad:
        raise UserError(f"--seeds: {bad[0]} is out of range (0 … 2147483647)")
    return tuple(dict.fromkeys(seeds))


def parse_method_params(items: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """'method.name=value' items → {method: {name: value}}, values parsed as JSON when they can be."""
    import json

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UserError(f"--param {item!r}: expected METHOD.NAME=VALUE, e.g. deepchest.signal=val-accuracy")
        lhs, value = item.split("=", 1)
        method, name = lhs.split(".", 1)
        METHODS.get(method)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(method, {})[name] = parsed
    for method, params in out.items():
        METHODS.get(method).make_params(params)  # reject unknown names before anything runs
    return out


def check_methods_fit(config: RunConfig, methods: Sequence[str]) -> None:
    """Refuse, before anything runs, a method that cannot work under `config`.

    With a frozen trunk there is no shared gradient to weight or aggregate: a gradient method
    (anything that needs more than the losses) would silently train the heads like EW. A
    compiled graph cannot be backpropagated several times (its buffers are donated), which the
    per-task gradients of a gradient method need.
    """
    needing = [m for m in methods if METHODS.get(m).needs != "losses"]
    if needing and config.compile:
        raise UserError(
            f"--compile supports loss-weighting methods only: the gradient method(s) {', '.join(needing)} "
            "backpropagate several times through one graph, which a compiled graph does not allow; "
            "drop --compile or those methods"
        )
    if needing and config.freeze_trunk:
        raise UserError(
            f"--freeze-trunk leaves no shared gradient for the gradient method(s) {', '.join(needing)}; "
            "drop them from --methods or train the trunk"
        )


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
    check_methods_fit(base, plan.methods)
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
