"""The DeepChest paper's claims, checked against the database: numbers and uncertainty, no more."""

from __future__ import annotations

import numpy as np

from mtlbench.errors import UserError
from mtlbench.registry import METHODS
from mtlbench.report.leaderboard import VariantResult, per_run_numbers
from mtlbench.report.load import Protocol
from mtlbench.report.stats import paired_t

DEEPCHEST = "deepchest"


def check_claims(protocol: Protocol, results: list[VariantResult]) -> list[str]:
    """One sentence per claim (accuracy, time per epoch, memory), each stating only what the data shows."""
    by_name = {r.variant: r for r in results if np.isfinite(r.numbers["AUROC"])}
    if DEEPCHEST not in by_name:
        return ["DeepChest has no complete run in this protocol, so the paper's claims cannot be checked here."]
    runs = per_run_numbers(protocol)
    return [_accuracy(by_name, runs), _time(by_name, runs), _memory(by_name)]


def _accuracy(by_name: dict[str, VariantResult], runs) -> str:
    others = {v: r for v, r in by_name.items() if v != DEEPCHEST}
    if not others:
        return "Accuracy: no other method has a complete run, so there is nothing to compare DeepChest with."
    best = max(others.values(), key=lambda r: r.numbers["accuracy@0.5"])
    dc = by_name[DEEPCHEST].numbers["accuracy@0.5"]
    diff_pp = 100 * (dc - best.numbers["accuracy@0.5"])
    test = _paired(runs, DEEPCHEST, best.variant, "accuracy")
    uncertainty = (f"95% CI over {test.n} paired seeds [{100 * test.low:+.2f}, {100 * test.high:+.2f}] points, "
                   f"p = {test.p:.2g}" if np.isfinite(test.low) else
                   f"{test.n} paired seed(s), too few for an interval")
    auroc_diff = by_name[DEEPCHEST].numbers["AUROC"] - best.numbers["AUROC"]
    return (
        f"Overall accuracy (the paper claims +7% over the best other method): DeepChest's test accuracy at 0.5 is "
        f"{100 * dc:.2f}% and the best other method's ({best.variant}) is {100 * best.numbers['accuracy@0.5']:.2f}%, "
        f"a difference of {diff_pp:+.2f} percentage points ({uncertainty}). On mean AUROC the difference to "
        f"{best.variant} is {auroc_diff:+.3f}."
    )


def _uses_task_gradients(variant: str) -> bool:
    """Whether the variant's method (a registered one) computes per-task gradients: the paper's
    "gradient-based" methods."""
    try:
        return METHODS.get(variant.split("[")[0]).space().per_task
    except UserError:  # a method no longer installed (a plugin): its kind is unknown
        return False


def _time(by_name: dict[str, VariantResult], runs) -> str:
    gradient = [v for v in by_name if _uses_task_gradients(v)]
    if not gradient:
        return "Time: no gradient-based method has a complete run, so the paper's 3× speed claim cannot be checked."
    dc = runs[runs["variant"] == DEEPCHEST]["s_per_epoch"]
    parts = []
    for v in gradient:
        theirs = runs[runs["variant"] == v]["s_per_epoch"]
        ratio = theirs.mean() / dc.mean()
        spread = (theirs.min() / dc.max(), theirs.max() / dc.min())
        parts.append(f"{v} {ratio:.2f}× (range over seeds {spread[0]:.2f}–{spread[1]:.2f})")
    return (
        f"Time per epoch (the paper claims DeepChest trains 3× faster than gradient-based methods): DeepChest takes "
        f"{dc.mean():.2f} s per epoch; each gradient-based method takes, relative to it: {'; '.join(parts)}."
    )


def _memory(by_name: dict[str, VariantResult]) -> str:
    dc = by_name[DEEPCHEST]
    kind = dc.row["memory"].split()[-1] if dc.row["memory"] != "—" else ""
    gradient = [r for v, r in by_name.items() if _uses_task_gradients(v)]
    if not gradient or not np.isfinite(dc.numbers["memory"]):
        return "Memory: no comparison is possible from this database."
    parts = [f"{r.variant} {r.numbers['memory'] / dc.numbers['memory']:.2f}×" for r in gradient]
    note = " (peak process RSS on a CPU, which includes the data and the Python process)" if kind == "RSS" else ""
    return (f"Memory (the paper claims DeepChest needs less): DeepChest's peak is {dc.numbers['memory']:.0f} MiB "
            f"{kind}{note}; gradient-based methods relative to it: {'; '.join(parts)}.")


def _paired(runs, a: str, b: str, column: str):
    left = runs[runs["variant"] == a].set_index("seed")[column]
    right = runs[runs["variant"] == b].set_index("seed")[column]
    shared = sorted(set(left.index) & set(right.index))
    return paired_t(left.loc[shared].to_numpy(), right.loc[shared].to_numpy())
