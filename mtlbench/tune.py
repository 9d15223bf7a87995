"""`mtlbench tune`: per method, its trials, the selection on validation, the selected configuration × seeds.

What to run (TunePlan) is decided in mtlbench/tuning.py, without torch; this module runs it
through the sweep's machinery (one data load, cells claimed, resumed or skipped like any run) and
records in the results database's tuning table which cells are trials, which trial each method
selected and which cells are the selected configuration's final runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mtlbench.results import readers
from mtlbench.results.store import ResultsStore
from mtlbench.sweep import open_session, run_cells
from mtlbench.training import RunResult, resolve_runtime
from mtlbench.tuning import Point, TrialOutcome, TunePlan, select_trial, selection_blocker


@dataclass(frozen=True)
class Selection:
    """One method's selected trial: its number, configuration and validation mean AUROC."""

    method: str
    trial: int
    point: Point
    val_auroc: float
    scored: int  # trials with a validation AUROC


@dataclass
class TuneResult:
    """What `run_tune` did: every trial's and final run's outcome, the selections, and per method
    why nothing was selected (a failed or unfinished trial, or no trial with a score)."""

    trials: list[RunResult] = field(default_factory=list)
    finals: list[RunResult] = field(default_factory=list)
    selections: dict[str, Selection] = field(default_factory=dict)
    unselected: dict[str, str] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)  # unselected only because another process runs a trial


def cell_hash(config: Any) -> str:
    """The identity `train_run` gives the cell (after resolving its runtime choices)."""
    return resolve_runtime(config).config_hash()


def trial_outcomes(store: ResultsStore, hashes: list[str]) -> list[TrialOutcome]:
    """Each trial's stored status and validation mean AUROC at its selected epoch (in trial order)."""
    found = readers.cell_outcomes(store, hashes).set_index("config_hash")
    out = []
    for i, h in enumerate(hashes):
        if h not in found.index:
            out.append(TrialOutcome(i, None))
            continue
        row = found.loc[h]
        score = row["val_auroc"]
        out.append(
            TrialOutcome(i, str(row["status"]), float(score) if score is not None and score == score else math.nan)
        )
    return out


def run_tune(plan: TunePlan, results: Path, display: Any, tensorboard: Path | None = None) -> TuneResult:
    """Run `plan` into the database at `results`; a run's failure is recorded, not raised. With `tensorboard`,
    each trial and run also writes its TensorBoard view under that folder."""
    session = open_session(plan.base, plan.methods, results, display, tensorboard)
    plan = replace(plan, base=session.base)
    result = TuneResult()
    with ResultsStore(results) as store:
        for method in plan.methods:
            study = plan.study(method)
            cells = plan.trial_cells(method)
            points = plan.points[method]
            hashes = [cell_hash(c) for c in cells]
            store.record_trials(
                study,
                method,
                plan.trials,
                plan.trial_seed,
                [(i, h, p.to_json()) for i, (h, p) in enumerate(zip(hashes, points))],
            )
            labels = [f"· trial {i + 1}/{len(cells)} ({p.label(method)})" for i, p in enumerate(points)]
            result.trials += run_cells(session, cells, store, display, labels=labels)
            outcomes = trial_outcomes(store, hashes)
            blocker = selection_blocker(outcomes)
            chosen = None if blocker else select_trial(outcomes)
            if chosen is None:
                if blocker and not any(o.status in ("failed", "interrupted") for o in outcomes):
                    result.waiting.add(method)
                result.unselected[method] = blocker or (
                    "no trial completed with a validation AUROC (every one "
                    "diverged or ran out of memory): nothing to select"
                )
                for _ in plan.seeds:  # the final runs that will not run: the sweep bar still completes
                    getattr(display, "end_run", lambda: None)()
                continue
            point = points[chosen.trial]
            scored = sum(o.status == "complete" and math.isfinite(o.val_auroc) for o in outcomes)
            result.selections[method] = Selection(method, chosen.trial, point, chosen.val_auroc, scored)
            finals = plan.final_cells(method, point)
            store.record_selection(study, chosen.trial, [(c.seed, cell_hash(c)) for c in finals], point.to_json())
            labels = [f"· selected ({point.label(method)})"] * len(finals)
            result.finals += run_cells(session, finals, store, display, labels=labels)
    return result
