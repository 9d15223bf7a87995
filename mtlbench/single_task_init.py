"""DeepChest's initialization from single-task accuracies (`--param deepchest.init=stl`), read from the database.

The paper initialises each task's weight from a single-task model's accuracy, w = 1 + (1 − acc)/2.
Here those models are the protocol's `stl` runs (`mtlbench run --stl`): their validation accuracy
at the selected epoch (the test split is never read to set up a run), averaged over the seeds
stored. The values go into the run's hyperparameters (`stl_accuracies`), so they are part of its
identity: other single-task results make another cell.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from mtlbench.config import RunConfig
from mtlbench.errors import UserError
from mtlbench.report.load import protocol_config, protocol_key
from mtlbench.results import readers
from mtlbench.results.store import ResultsStore
from mtlbench.tasks import TASK_NAMES
from mtlbench.training.factories import resolve_runtime

NEEDS_STL_ACCURACIES = {"deepchest": "init"}  # method → the hyperparameter that asks for them with value "stl"


def needs_single_task_runs(cell: RunConfig) -> bool:
    """Whether `cell`'s method reads the protocol's single-task runs (init=stl with no accuracies given)."""
    asking = NEEDS_STL_ACCURACIES.get(cell.method)
    return (
        asking is not None and cell.method_params.get(asking) == "stl" and not cell.method_params.get("stl_accuracies")
    )


def with_single_task_init(cell: RunConfig, store: ResultsStore) -> RunConfig:
    """`cell` with `stl_accuracies` filled in from the database where its method asks for init=stl (and
    none were given); a UserError naming the missing tasks where the protocol's single-task runs lack one."""
    if not needs_single_task_runs(cell):
        return cell
    params = cell.method_params
    accuracies = single_task_accuracies(store, cell)
    missing = [t for t in TASK_NAMES if t not in accuracies]
    if missing:
        raise UserError(
            f"{cell.method}: init=stl needs a complete single-task run of this protocol for every task; none for "
            f"{', '.join(missing)}: add --stl to the command (the single-task runs train first)"
        )
    text = ",".join(repr(float(np.mean(accuracies[t]))) for t in TASK_NAMES)
    return replace(cell, method_params={**params, "stl_accuracies": text})


def single_task_accuracies(store: ResultsStore, cell: RunConfig) -> dict[str, list[float]]:
    """{task: validation accuracies of its complete single-task runs in `cell`'s protocol, one per seed}."""
    key = protocol_key(json.loads(resolve_runtime(cell).to_json()))  # as the runs stored it: device, precision
    found: dict[str, list[float]] = {}
    for row in readers.single_task_validation(store).itertuples():
        if protocol_key(protocol_config(row.config_json, None)) == key and np.isfinite(row.accuracy):
            found.setdefault(str(row.task), []).append(float(row.accuracy))
    return found
