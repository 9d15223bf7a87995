"""The DeepChest paper's claims, checked against the database: numbers and uncertainty, no more.

Every number comes from the leaderboard's numeric frame and per-run numbers; nothing is parsed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtlbench.errors import UserError
from mtlbench.registry import METHODS
from mtlbench.report.leaderboard import Leaderboard, difference, shared_seeds
from mtlbench.report.load import SINGLE_TASK
from mtlbench.report.per_run import UNKNOWN, UNRELIABLE, peak_memory, timed_runs

DEEPCHEST = "deepchest"


def check_claims(board: Leaderboard) -> list[str]:
    """One sentence per claim (accuracy, time per epoch, memory), each stating only what the data shows."""
    values = board.values()
    values = values[np.isfinite(values["auroc"])]  # variants with a complete run
    if DEEPCHEST not in values.index:
        return ["DeepChest has no complete run in this protocol, so the paper's claims cannot be checked here."]
    return [_accuracy(board, values), _time(values, board.per_run), _memory(values)]


def comparator(runs: pd.DataFrame, candidates: list[str]) -> str | None:
    """The best other method, chosen on validation: the highest mean validation accuracy over its runs (the
    test split is never read to choose what the test compares). None where no candidate has one."""
    val = runs[runs["variant"].isin(candidates)].groupby("variant")["val_accuracy"].mean().dropna()
    return str(val.idxmax()) if not val.empty else None


def _accuracy(board: Leaderboard, values: pd.DataFrame) -> str:
    others = [v for v in values.index if v not in (DEEPCHEST, SINGLE_TASK)]  # STL is a baseline, not a method
    best = comparator(board.per_run, others)
    if best is None:
        return "Accuracy: no other method has a complete run with validation predictions to compare DeepChest with."
    dc, theirs = values.loc[DEEPCHEST], values.loc[best]
    mine, ref = board.metrics.get(DEEPCHEST), board.metrics.get(best)
    seeds = shared_seeds(mine, ref) if mine is not None and ref is not None else []
    val = board.per_run[board.per_run["variant"] == best]["val_accuracy"].mean()
    sentence = (
        f"Overall accuracy (the paper claims +7% over the best other method): DeepChest's test accuracy at 0.5 is "
        f"{100 * dc['accuracy']:.2f}% and that of the best other method on validation, {best} (validation "
        f"accuracy {100 * val:.2f}%), is {100 * theirs['accuracy']:.2f}%"
    )
    if not seeds:
        return sentence + "; they share no seed, so there is no paired difference."
    diff = difference(mine, ref, "accuracy", seeds)
    auroc = difference(mine, ref, "auroc", seeds)
    over = f"{len(seeds)} paired seeds" if len(seeds) > 1 else "one seed: test-set sampling only"
    return (
        sentence + f": a difference of {100 * diff.mean:+.2f} percentage points, 95% interval "
        f"[{100 * diff.low:+.2f}, {100 * diff.high:+.2f}] over test patients ({over}), p = {diff.p:.2g}. On mean "
        f"AUROC the difference is {auroc.mean:+.3f} [{auroc.low:+.3f}, {auroc.high:+.3f}]."
    )


def _uses_task_gradients(variant: str) -> bool:
    """Whether the variant's method (a registered one) computes per-task gradients: the paper's
    "gradient-based" methods."""
    try:
        return METHODS.get(variant.split("[")[0]).space().per_task
    except UserError:  # a method no longer installed (a plugin): its kind is unknown
        return False


def _time(values: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The speed claim, from the timings that may be compared: a run timed on a loaded machine (its costs
    marked unreliable) is never used; a method left without such a run is "not measurable"."""
    gradient = [v for v in values.index if _uses_task_gradients(v)]
    if not gradient:
        return "Time: no gradient-based method has a complete run, so the paper's 3× speed claim cannot be checked."
    claim = "Time per epoch (the paper claims DeepChest trains 3× faster than gradient-based methods): "
    timed = timed_runs(runs)
    dc = timed[timed["variant"] == DEEPCHEST]["s_per_epoch"].dropna()
    if dc.empty:
        return claim + _unmeasurable(runs, DEEPCHEST, "DeepChest") + "."
    parts = []
    for v in gradient:
        theirs = timed[timed["variant"] == v]["s_per_epoch"].dropna()
        if theirs.empty:
            parts.append(f"{v} {_unmeasurable(runs, v)}")
            continue
        ratio = theirs.mean() / dc.mean()
        spread = (theirs.min() / dc.max(), theirs.max() / dc.min())
        seeds = min(len(theirs), len(dc))
        parts.append(
            f"{v} {ratio:.2f}× "
            + (f"(range over seeds {spread[0]:.2f}–{spread[1]:.2f})" if seeds > 1 else "(one seed)")
        )
    involved = runs[runs["variant"].isin([DEEPCHEST, *gradient])]
    left_out, unknown = int((involved["timing"] == UNRELIABLE).sum()), int((involved["timing"] == UNKNOWN).sum())
    notes = (f" {left_out} run(s) timed on a loaded machine are left out." if left_out else "") + (
        f" {unknown} run(s) carry no load measurement (stored before schema 8): used as before, undisturbed or not."
        if unknown
        else ""
    )
    return (
        claim + f"DeepChest takes {dc.mean():.2f} s per epoch; each gradient-based method takes, relative to it: "
        f"{'; '.join(parts)}.{notes}"
    )


def _unmeasurable(runs: pd.DataFrame, variant: str, name: str = "") -> str:
    """Why a variant has no usable timing: its runs timed on a loaded machine, or none stored."""
    loaded = int(((runs["variant"] == variant) & (runs["timing"] == UNRELIABLE)).sum())
    if loaded:
        return f"not measurable: {loaded} {name + ' ' if name else ''}run(s) timed on a loaded machine"
    return f"not measurable: {name + ' ' if name else ''}no timing stored"


def _memory(values: pd.DataFrame) -> str:
    dc, kind = peak_memory(values, DEEPCHEST)  # kind: which peak the runs measured (CUDA or RSS)
    gradient = [v for v in values.index if _uses_task_gradients(v)]
    if not gradient or not np.isfinite(dc):
        return "Memory: no comparison is possible from this database."
    parts = [f"{v} {peak_memory(values, v)[0] / dc:.2f}×" for v in gradient]
    note = " (peak process RSS on a CPU, which includes the data and the Python process)" if kind == "RSS" else ""
    return (
        f"Memory (the paper claims DeepChest needs less): DeepChest's peak is {dc:.0f} MiB "
        f"{kind}{note}; gradient-based methods relative to it: {'; '.join(parts)}."
    )
