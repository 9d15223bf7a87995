"""Per-run numbers the report aggregates: each complete run's stored test means, costs and peak memory,
and whether its timings may be compared (other processes may have loaded the machine while it trained;
machine_load.LOADED_SHARE decides)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtlbench.machine_load import LOADED_SHARE
from mtlbench.report.load import Protocol

MEMORY_KINDS = {"cuda": "CUDA", "rss": "RSS"}  # preferred first
# a run's timing, from its stored costs: compared, left out (other load), or compared without a load measurement
RELIABLE, UNRELIABLE, UNKNOWN = "reliable", "unreliable", "unknown"
TIMING_MARK = "‡"


PER_RUN_COLUMNS = [
    "run_id",
    "variant",
    "seed",
    "auroc",
    "accuracy",
    "val_accuracy",
    "loss",
    "s_per_epoch",
    "step_s",
    "step_cpu_s",
    "images_per_s",
    "memory_mb",
    "memory_kind",
    "other_load",
    "timing",
    "timing_reason",
]


def timing_state(cost: pd.Series | None) -> tuple[str, str]:
    """(RELIABLE | UNRELIABLE | UNKNOWN, why) of a run's stored timings."""
    if cost is None:
        return UNKNOWN, "no costs stored"
    flag, reason = cost.get("unreliable"), cost.get("unreliable_reason")
    reason = reason if isinstance(reason, str) else ""
    if flag is None or pd.isna(flag):
        return UNKNOWN, reason or "stored before schema 8, without a load measurement"
    return (UNRELIABLE if int(flag) else RELIABLE), reason


def timed_runs(per_run: pd.DataFrame) -> pd.DataFrame:
    """The runs whose timings may be compared: all but those marked unreliable (unknown ones count, as before)."""
    return per_run[per_run["timing"] != UNRELIABLE]


def timing_notes(per_run: pd.DataFrame) -> list[str]:
    """What a reader of any time column must know: which runs' timings it leaves out (marked TIMING_MARK)
    and how many it uses without knowing whether other processes disturbed them."""
    notes = []
    bad = per_run[per_run["timing"] == UNRELIABLE]
    if len(bad):
        low, high = (f"{100 * x:.0f}" for x in (bad["other_load"].min(), bad["other_load"].max()))
        span = "an unknown share" if low == "nan" else f"{low}%" if low == high else f"{low}–{high}%"
        notes.append(
            f"{TIMING_MARK} Time columns leave out {len(bad)} of {len(per_run)} run(s), timed on a loaded machine: "
            f"other processes used {span} of the CPUs during their training steps (a run is left out from "
            f"{100 * LOADED_SHARE:.0f}% on): "
            + ", ".join(f"{r.variant} seed {r.seed}" for r in bad.itertuples())
            + ". Their accuracy and peak memory (which other processes' CPU use does not change) are kept."
        )
    unknown = per_run[per_run["timing"] == UNKNOWN]
    if len(unknown):
        notes.append(
            f"{len(unknown)} run(s) carry no measurement of the machine's load (stored before schema 8, "
            "trained too briefly to measure it, or not on Linux): their timings are compared as before, but "
            "whether other processes slowed them is unknown."
        )
    return notes


def per_run_numbers(protocol: Protocol) -> pd.DataFrame:
    """One row per complete run: its stored test means over all tasks (what the paper check reads), costs, and
    whether its timings may be compared (`timing`: RELIABLE, UNRELIABLE or UNKNOWN; see `timed_runs`)."""
    rows = []
    epochs = max(protocol.epochs, 1)
    costs = protocol.costs.set_index("run_id") if not protocol.costs.empty else pd.DataFrame()
    for run in protocol.complete().itertuples():
        test = protocol.test[protocol.test["run_id"] == run.run_id]
        cost = costs.loc[run.run_id] if run.run_id in costs.index else None
        memory, memory_kind = (float("nan"), "")
        if cost is not None:
            cuda = cost.get("peak_cuda_mb")
            memory, memory_kind = (float(cuda), "cuda") if pd.notna(cuda) else (float(cost["peak_rss_mb"]), "rss")
        timing, reason = timing_state(cost)
        rows.append(
            {
                "run_id": int(run.run_id),
                "variant": run.variant,
                "seed": int(run.seed),
                "auroc": test["auroc"].mean(),
                "accuracy": test["accuracy"].mean(),
                "val_accuracy": _val_accuracy(protocol, int(run.run_id)),
                "loss": test["loss"].mean(),
                "s_per_epoch": float(cost["train_s"]) / epochs if cost is not None else float("nan"),
                "step_s": float(cost["median_step_s"]) if cost is not None else float("nan"),
                "step_cpu_s": _number(cost, "median_step_cpu_s"),
                "images_per_s": float(cost["images_per_s"]) if cost is not None else float("nan"),
                "memory_mb": memory,
                "memory_kind": memory_kind,
                "other_load": _number(cost, "other_load"),
                "timing": timing,
                "timing_reason": reason,
            }
        )
    return pd.DataFrame(rows, columns=PER_RUN_COLUMNS)


def _val_accuracy(protocol: Protocol, run_id: int) -> float:
    """Accuracy at p > 0.5 on the run's stored validation predictions (its selected epoch), mean over tasks:
    what a comparison may choose its comparator by without reading the test split. NaN without them."""
    stored = protocol.predictions.get((run_id, "val"))
    if stored is None or len(stored[1]) == 0:
        return float("nan")
    _, labels, probs = stored
    labelled = ~np.isnan(labels.astype(np.float64))  # accuracy over each task's labelled images
    with np.errstate(invalid="ignore", divide="ignore"):
        per_task = (((probs > 0.5) == (labels > 0)) & labelled).sum(axis=0) / labelled.sum(axis=0)
    return float(np.nanmean(per_task)) if np.isfinite(per_task).any() else float("nan")


def _number(cost: pd.Series | None, column: str) -> float:
    value = None if cost is None else cost.get(column)
    return float(value) if value is not None and pd.notna(value) else float("nan")


def peak_memory(values: pd.DataFrame, variant: str) -> tuple[float, str]:
    """(peak MiB, "CUDA" | "RSS") of a variant from a `Leaderboard.values()` table; (NaN, "") if none."""
    for kind, label in MEMORY_KINDS.items():
        metric = f"peak_{kind}_mb"
        if metric in values.columns and np.isfinite(values.loc[variant, metric]):
            return float(values.loc[variant, metric]), label
    return float("nan"), ""
