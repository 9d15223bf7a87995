"""The single-task baseline as one variant: each seed's `stl` runs, one per task, joined into one run.

`mtlbench run --stl` trains one network per task and seed (`methods/stl.py`). A reader compares
methods per seed over all tasks, so the report joins a seed's single-task runs into one run of
variant `stl`: its test and validation predictions side by side in task order, its per-task
metrics and loss curves those of the run that trained the task, and its costs those of training
all of them (times and steps summed, images per second over the whole, the largest peak memory).
A seed whose runs do not cover every task, or of which one did not complete, is one failed run.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from mtlbench.methods.params import SINGLE_TASK as STL
from mtlbench.report.load import Protocol

SUMMED_COSTS = ("wall_s", "train_s", "eval_s", "median_step_s", "median_method_s", "median_step_cpu_s")


def join_single_task_runs(protocol: Protocol) -> Protocol:
    """`protocol` with each seed's single-task runs replaced by one joined run of variant `stl`."""
    single = protocol.runs[protocol.runs["method"] == STL]
    if single.empty:
        return protocol
    tasks = [t for t in protocol.tasks() if t in set(protocol.test["task"])]
    others = protocol.runs[protocol.runs["method"] != STL]
    ids = set(single["run_id"].astype(int))
    joined = _Joined(protocol, tasks, next_id=int(protocol.runs["run_id"].max()) + 1)
    rows = [joined.add(seed, group) for seed, group in single.groupby("seed", sort=True)]
    keep = {k: v for k, v in protocol.predictions.items() if k[0] not in ids}
    return replace(
        protocol,
        runs=pd.concat([others, pd.DataFrame(rows)], ignore_index=True),
        test=pd.concat([protocol.test[~protocol.test["run_id"].isin(ids)], *joined.test], ignore_index=True),
        curves=pd.concat([protocol.curves[~protocol.curves["run_id"].isin(ids)], *joined.curves], ignore_index=True),
        weights=protocol.weights[~protocol.weights["run_id"].isin(ids)],  # one task: its weight is 1
        costs=pd.concat([protocol.costs[~protocol.costs["run_id"].isin(ids)], *joined.costs], ignore_index=True),
        predictions={**keep, **joined.predictions},
        patients={**{k: v for k, v in protocol.patients.items() if k[0] not in ids}, **joined.patients},
    )


class _Joined:
    """The joined runs' rows, collected seed by seed."""

    def __init__(self, protocol: Protocol, tasks: list[str], next_id: int):
        self.protocol, self.tasks, self.next_id = protocol, tasks, next_id
        self.test: list[pd.DataFrame] = []
        self.curves: list[pd.DataFrame] = []
        self.costs: list[pd.DataFrame] = []
        self.predictions: dict = {}
        self.patients: dict = {}

    def add(self, seed: int, group: pd.DataFrame) -> dict:
        """One joined run of `seed` from its single-task runs `group`; its runs-table row."""
        run_id, self.next_id = self.next_id, self.next_id + 1
        p = self.protocol
        by_task = {str(t): r for t, r in zip(group["tasks"], group.itertuples())}
        problems = [f"{t}: no run" for t in self.tasks if t not in by_task]
        problems += [f"{t}: {r.status}" for t, r in by_task.items() if r.status != "complete"]
        problems += [
            f"{t}: no stored test predictions"
            for t, r in by_task.items()
            if r.status == "complete" and (int(r.run_id), "test") not in p.predictions
        ]
        row = {**group.iloc[0].to_dict(), "run_id": run_id, "tasks": "", "config_hash": f"{STL}-seed-{seed}"}
        row.update(selected_epoch=np.nan, diverged_step=np.nan, variant=STL)
        if problems:
            reason = "the single-task runs do not cover every task (" + "; ".join(problems) + ")"
            return {**row, "status": "failed", "error": reason}
        members = [int(by_task[t].run_id) for t in self.tasks]
        self.test.append(p.test[p.test["run_id"].isin(members)].assign(run_id=run_id))
        self.curves.append(p.curves[p.curves["run_id"].isin(members)].assign(run_id=run_id))
        self._join_predictions(run_id, members)
        self._join_costs(run_id, members)
        return {**row, "status": "complete", "error": None}

    def _join_predictions(self, run_id: int, members: list[int]) -> None:
        for split in ("val", "test"):
            stored = [self.protocol.predictions.get((m, split)) for m in members]
            if any(s is None for s in stored):
                continue
            image_ids = stored[0][0]
            if any(list(s[0]) != list(image_ids) for s in stored):
                raise ValueError(f"single-task runs {members} were evaluated on different {split} images")
            self.predictions[(run_id, split)] = (
                image_ids,
                np.concatenate([s[1] for s in stored], axis=1),
                np.concatenate([s[2] for s in stored], axis=1),
            )
            if (members[0], split) in self.protocol.patients:
                self.patients[(run_id, split)] = self.protocol.patients[(members[0], split)]

    def _join_costs(self, run_id: int, members: list[int]) -> None:
        costs = self.protocol.costs[self.protocol.costs["run_id"].isin(members)]
        if len(costs) != len(members):
            return  # a member without stored costs: the joined run has none either
        row = costs.iloc[0].to_dict() | {"run_id": run_id}
        for column in SUMMED_COSTS:
            if column in costs:
                row[column] = costs[column].sum(min_count=len(members))
        if "images_per_s" in costs:  # the same images seen by every run: their rate over the whole
            row["images_per_s"] = 1.0 / (1.0 / costs["images_per_s"]).sum()
        for column in ("peak_cuda_mb", "peak_rss_mb", "other_load"):
            if column in costs:
                row[column] = costs[column].max()
        if "unreliable" in costs:
            flags = costs["unreliable"]
            row["unreliable"] = np.nan if flags.isna().any() else float(flags.max())
            reasons = [r for r in costs.get("unreliable_reason", []) if isinstance(r, str) and r]
            row["unreliable_reason"] = reasons[0] if reasons else None
        self.costs.append(pd.DataFrame([row]))
