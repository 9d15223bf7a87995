"""The leaderboard as the report shows it: the numeric frame formatted, best values in bold.

Formatting happens here and only here; nothing reads these strings back.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import pandas as pd

from mtlbench.report.leaderboard import RELATIVE, Leaderboard, peak_memory, reference_label

NAN = float("nan")


@dataclass(frozen=True)
class Column:
    """One column of the shown table: its header ({ref}: the reference's label), the metric whose value
    is marked best (None: never), whether higher is better, and its legend entry."""

    header: str
    metric: str | None
    higher: bool
    legend: str


COLUMNS = [
    Column("runs", None, True, "complete runs / runs (failed, diverged or out-of-memory runs are listed by status)"),
    Column("AUROC", "auroc", True, "test AUROC, mean over the 14 tasks; mean ± sd over seeds"),
    Column("accuracy@0.5", "accuracy", True,
           "test accuracy at p > 0.5, mean over tasks (the DeepChest paper's 'overall accuracy')"),
    Column("macro-F1", "macro_f1", True,
           "test F1 per task at the threshold that maximizes F1 on validation, mean over tasks"),
    Column("balanced acc.", "balanced_accuracy", True,
           "test balanced accuracy per task at the threshold that maximizes Youden's J on validation"),
    Column("test loss", "test_loss", False, "test loss (the training loss function), mean over tasks"),
    Column("Δm% vs {ref}", "delta_m_pct", True,
           "mean relative change vs {ref} over tasks of AUROC (higher better) and test loss (lower better), %"),
    Column("ΔAUROC vs {ref} (seeds)", None, True,
           "paired over seeds: mean difference, 95% t-interval, p (paired t-test)"),
    Column("ΔAUROC vs {ref} (images)", None, True,
           "paired bootstrap over test images ({resamples:,} resamples, seed-averaged): difference, "
           "95% percentile interval, p"),
    Column("s/epoch", "s_per_epoch", False, "training time per epoch (s), mean over seeds"),
    Column("step × {ref}", "step_ratio", False, "median training-step time ÷ {ref}'s, same protocol"),
    Column("images/s", "images_per_s", True, "training images per second"),
    Column("memory", "memory", False, "peak CUDA memory (MiB) on a GPU; on a CPU peak process RSS (MiB), labeled RSS"),
]


def column_legend(resamples: int, reference: str) -> dict[str, str]:
    """Header → legend entry, with the reference and the number of bootstrap resamples filled in."""
    ref = reference_label(reference)
    return {c.header.format(ref=ref): c.legend.format(ref=ref, resamples=resamples) for c in COLUMNS}


def display_table(board: Leaderboard) -> pd.DataFrame:
    """The leaderboard's display strings (`**best**` in Markdown bold), one row per variant."""
    ref = reference_label(board.reference)
    values = board.values()
    frame = board.frame.set_index(["variant", "metric"])
    rows, numbers = [], []
    for variant in board.variants():
        def get(metric: str, field: str = "value") -> float:
            key = (variant, metric)
            return float(frame.at[key, field]) if key in frame.index else NAN

        def diff(metric: str) -> str:
            mean, low, high, p = (get(metric, f) for f in ("value", "lo", "hi", "p"))
            return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] p={p:.2g}" if np.isfinite(mean) else "—"

        memory, kind = peak_memory(values, variant)
        complete, n = int(get("runs_complete")), int(get("auroc", "n"))
        others = [(m.removeprefix("runs_"), int(c)) for (v, m), c in frame["value"].items()
                  if v == variant and m.startswith("runs_") and m != "runs_complete"]
        shown: dict[str, str] = {
            "runs": f"{complete}/{complete + sum(c for _, c in others)}"
                    + (f" ({', '.join(f'{c} {s}' for s, c in others)})" if others else ""),
            "AUROC": f"{get('auroc'):.3f} ± {get('auroc', 'sd'):.3f} (n={n})" if n > 1 else _f(get("auroc"), 3),
            "accuracy@0.5": _f(get("accuracy"), 3),
            "macro-F1": _f(get("macro_f1"), 3),
            "balanced acc.": _f(get("balanced_accuracy"), 3),
            "test loss": _f(get("test_loss"), 4),
            "Δm% vs {ref}": _f(get("delta_m_pct"), 2, signed=True),
            "ΔAUROC vs {ref} (seeds)": diff("delta_auroc_seeds"),
            "ΔAUROC vs {ref} (images)": diff("delta_auroc_images"),
            "s/epoch": _f(get("s_per_epoch"), 2),
            "step × {ref}": _f(get("step_ratio"), 2),
            "images/s": _f(get("images_per_s"), 0),
            "memory": f"{memory:.0f} {kind}" if np.isfinite(memory) else "—",
        }
        rows.append({"method": variant, **{c.header.format(ref=ref): shown[c.header] for c in COLUMNS}})
        numbers.append({c.metric: memory if c.metric == "memory" else get(c.metric) for c in COLUMNS if c.metric})
    table = pd.DataFrame(rows)
    is_reference = np.array([v == board.reference for v in board.variants()], dtype=bool)
    mark_best(table, pd.DataFrame(numbers), is_reference, ref)
    return table


def mark_best(table: pd.DataFrame, numbers: pd.DataFrame, is_reference: np.ndarray, ref: str = "EW") -> None:
    """Bold (`**…**`) the best finite value of each column in `numbers` (metric → value per row of
    `table`); ties are all bold, the reference's own relative values (0 and 1 by definition) never."""
    for column in COLUMNS:
        if column.metric is None or column.metric not in numbers:
            continue
        values = numbers[column.metric].to_numpy(dtype=float, copy=True)
        if column.metric in RELATIVE:
            values[is_reference] = np.nan
        values[~np.isfinite(values)] = np.nan  # an infinity is no best value (the table shows it as —)
        if not np.isfinite(values).any():
            continue
        best = np.nanmax(values) if column.higher else np.nanmin(values)
        header = column.header.format(ref=ref)
        for i in np.flatnonzero(np.isclose(values, best, rtol=1e-9, atol=0)):  # ties: all of them
            table.loc[i, header] = f"**{table.loc[i, header]}**"


def _f(value: float, digits: int, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
