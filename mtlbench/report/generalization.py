"""The report's cross-dataset table (`--test-dataset`): each method's test AUROC on its own dataset's test
split and on another dataset's, over the same tasks, so a drop is the change of data and not of tasks.

The tasks compared are those with at least `min_positives` test positives (and a negative) on both test
splits: a task the training data does not label has no positives in its own test split and is left out.
Numbers are seed means (± the standard deviation over seeds); the other dataset's test split has no
stored predictions, so there is no bootstrap interval here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtlbench.report.leaderboard import Leaderboard
from mtlbench.report.load import Protocol

GENERALIZATION_EXPLANATION = (
    "Each row: a method trained on the protocol's dataset, its mean test AUROC on that dataset's test split and "
    "on another dataset's (`--test-dataset`), over the tasks both test splits can score (at least --min-positives "
    "positives and a negative on both; `tasks` counts them, — where there is none); seed mean ± sd over seeds. No "
    "interval: the other test split's predictions are not stored."
)


def generalization_table(protocol: Protocol, board: Leaderboard) -> pd.DataFrame:
    """One row per variant and other test dataset; empty when the protocol has no cross-dataset tests."""
    cross = protocol.cross_tests
    if cross.empty:
        return pd.DataFrame()
    runs = protocol.complete().set_index("run_id")
    own = protocol.test.set_index(["run_id", "task"])["auroc"]
    rows = []
    for dataset, theirs in cross.groupby("dataset", sort=True):
        counts = theirs.drop_duplicates("task").set_index("task")
        eligible_there = (counts["positives"] >= board.min_positives) & (counts["positives"] < counts["images"])
        tasks = [t for t, ok in zip(board.tasks, board.eligible) if ok and bool(eligible_there.get(t, False))]
        for variant in board.variants():
            ids = [int(r) for r in runs.index[runs["variant"] == variant] if int(r) in set(theirs["run_id"])]
            if not ids:
                continue
            row = {"method": variant, "trained on": protocol.dataset, "tested on": dataset, "tasks": len(tasks)}
            if tasks:  # else no task has enough positives on both test splits: nothing to compare
                at_home = [float(np.mean([own[(r, t)] for t in tasks])) for r in ids]
                there = theirs.set_index(["run_id", "task"])["auroc"]
                away = [float(np.mean([there[(r, t)] for t in tasks])) for r in ids]
                row |= {
                    "own test AUROC": _mean_sd(at_home),
                    "other test AUROC": _mean_sd(away),
                    "change": _mean_sd(list(np.subtract(away, at_home)), signed=True),
                }
            else:
                row |= {"own test AUROC": "—", "other test AUROC": "—", "change": "—"}
            rows.append({**row, "seeds": len(ids)})
    return pd.DataFrame(rows)


def _mean_sd(values: list[float], signed: bool = False) -> str:
    fmt = "+.3f" if signed else ".3f"
    if len(values) < 2:
        return format(values[0], fmt)
    return f"{format(float(np.mean(values)), fmt)} ± {float(np.std(values, ddof=1)):.3f}"
