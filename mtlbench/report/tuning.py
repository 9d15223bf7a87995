"""The report's Tuning section: every trial of `mtlbench tune`, by validation AUROC, never a test number.

A trial's test metrics are never shown anywhere (report/load.py leaves trials out of every
protocol); this section lists each method's trials with the validation mean AUROC the selection
read, and marks the selected one, whose configuration the leaderboard shows with the final seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mtlbench.results import readers
from mtlbench.results.store import ResultsStore
from mtlbench.tuning import Point

COLUMNS = ["method", "budget", "trial_seed", "trial", "configuration", "status", "val_auroc", "selected", "study"]
EXPLANATION = (
    "Each method was tuned with the same budget: up to that many configurations of its declared search space "
    "(learning rate and weight decay from one grid for every method, and the method's own hyperparameters; the "
    "whole grid when it is no larger, else the defaults and seeded random draws), each trained with the trial "
    "seed. The trial with the highest validation mean AUROC (at its selected epoch) was selected (✓) and run with "
    "the leaderboard's seeds. Selection never read the test split, and no trial's test metrics are shown."
)


def tuning_frame(results: Path, dataset: str | None = None, methods: list[str] | None = None) -> pd.DataFrame:
    """One row per trial (COLUMNS): its study's method, budget and trial seed, its number (from 1), its
    configuration, its run's status and validation mean AUROC, and whether it was selected; sorted per
    study by validation AUROC, best first. `dataset` and `methods` restrict it as they restrict the report."""
    with ResultsStore(results) as store:
        rows = readers.tuning_rows(store)
        trials = rows[rows["role"] == "trial"]
        outcomes = readers.cell_outcomes(store, trials["config_hash"].tolist())
    if trials.empty:
        return pd.DataFrame(columns=COLUMNS)
    merged = trials.merge(outcomes, on="config_hash", how="left")
    if dataset is not None:
        merged = merged[merged["dataset"] == dataset]
    if methods:
        merged = merged[merged["method"].isin(methods)]
    frame = pd.DataFrame(
        {
            "method": merged["method"],
            "budget": merged["budget"].astype(int),
            "trial_seed": merged["trial_seed"].astype(int),
            "trial": merged["idx"].astype(int) + 1,
            "configuration": [Point.from_json(v).label(m) for v, m in zip(merged["values_json"], merged["method"])],
            "status": merged["status"].fillna("not run"),
            "val_auroc": pd.to_numeric(merged["val_auroc"], errors="coerce"),
            "selected": merged["selected"].astype(bool),
            "study": merged["study"],
        }
    )
    order = list(dict.fromkeys(frame["method"]))
    frame = frame.assign(_m=[order.index(m) for m in frame["method"]])
    frame = frame.sort_values(
        ["_m", "budget", "trial_seed", "study", "val_auroc", "trial"],
        ascending=[True, True, True, True, False, True],
        na_position="last",
    )
    return frame.drop(columns="_m").reset_index(drop=True)[COLUMNS]


def tuning_table(frame: pd.DataFrame) -> pd.DataFrame:
    """`tuning_frame` formatted for the report."""
    return pd.DataFrame(
        {
            "method": frame["method"],
            "budget": [f"{b} (trial seed {s})" for b, s in zip(frame["budget"], frame["trial_seed"])],
            "trial": frame["trial"],
            "configuration": frame["configuration"],
            "status": frame["status"],
            "val AUROC": ["—" if not np.isfinite(v) else f"{v:.4f}" for v in frame["val_auroc"]],
            "selected": ["✓" if s else "" for s in frame["selected"]],
        }
    )
