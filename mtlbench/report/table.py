"""The leaderboard as the report shows it: the numeric frame formatted, significantly best values in bold.

Formatting happens here and only here; nothing reads these strings back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mtlbench.report.leaderboard import ALPHA, DELTA_M_STL, Leaderboard, reference_label
from mtlbench.report.per_run import TIMING_MARK, peak_memory, timing_notes

NAN = float("nan")
BOLD_RULE = (
    "Bold: better than every other method with Holm-adjusted p < {alpha} on the same resamples; "
    "no bold where no value is."
)


@dataclass(frozen=True)
class Column:
    """One column of the shown table: its header ({ref}: the reference's label), the metric it shows
    (None: composed), and its legend entry."""

    header: str
    metric: str | None
    legend: str


MEAN = "mean over the tasks with ≥ {min_pos} test positives; [95% interval over patients and seeds]"
COLUMNS = [
    Column("runs", None, "complete runs / runs (failed, diverged or out-of-memory runs are listed by status)"),
    Column("AUROC", "auroc", "test AUROC, " + MEAN),
    Column("AP", "ap", "test average precision (area under the precision-recall curve), " + MEAN),
    Column("accuracy@0.5", "accuracy", "test accuracy at p > 0.5 (the DeepChest paper's 'overall accuracy'), " + MEAN),
    Column("macro-F1", "macro_f1", "test F1 per task at the threshold that maximizes F1 on validation, " + MEAN),
    Column(
        "balanced acc.",
        "balanced_accuracy",
        "test balanced accuracy per task at the threshold that maximizes Youden's J on validation, " + MEAN,
    ),
    Column(
        "ECE",
        "ece",
        "expected calibration error of each task's probability (10 equal-width bins; lower is better), " + MEAN,
    ),
    Column("test loss", "test_loss", "test loss (the training loss function), mean over all tasks and seeds"),
    Column(
        "Δm% vs {ref}",
        "delta_m_pct",
        "mean relative change vs {ref} of AUROC and AP over the tasks with ≥ {min_pos} test positives, %; "
        "[95% interval], Holm-adjusted p over this protocol's methods",
    ),
    Column(
        "Δm% vs STL",
        DELTA_M_STL,
        "the same against STL, the single-task baseline (`mtlbench run --stl`; Δm% as Maninis et al. and "
        "Navon et al. define it): shown when the protocol has single-task runs",
    ),
    Column(
        "ΔAUROC vs {ref}",
        "delta_auroc",
        "mean-AUROC difference vs {ref}, paired by patient and seed ({resamples:,} resamples); [95% interval], "
        "Holm-adjusted p",
    ),
    Column(
        "ΔAUROC vs {ref} (seeds)",
        "delta_auroc_seeds",
        "paired over seeds: mean difference, [95% t-interval], p (paired t-test; — with fewer than 2 seeds or "
        "no spread)",
    ),
    Column("s/epoch", "s_per_epoch", "training time per epoch (s), mean over seeds"),
    Column(
        "step × {ref}",
        "step_ratio",
        "median training-step time ÷ {ref}'s, geometric mean over paired seeds [95% interval]; a pair with a "
        "run timed on a loaded machine is left out (" + TIMING_MARK + ")",
    ),
    Column("images/s", "images_per_s", "training images per second"),
    Column("memory", None, "peak CUDA memory (MiB) on a GPU; on a CPU peak process RSS (MiB), labeled RSS"),
]
DIGITS = {
    "auroc": 3,
    "ap": 3,
    "accuracy": 3,
    "macro_f1": 3,
    "balanced_accuracy": 3,
    "ece": 3,
    "test_loss": 4,
    "delta_m_pct": 2,
    DELTA_M_STL: 2,
    "delta_auroc": 3,
    "delta_auroc_seeds": 3,
    "s_per_epoch": 2,
    "step_ratio": 2,
    "images_per_s": 0,
}
SIGNED = ("delta_m_pct", DELTA_M_STL, "delta_auroc", "delta_auroc_seeds")
TIMED = ("s_per_epoch", "step_ratio", "images_per_s")  # cells marked TIMING_MARK where runs were left out


def shown_columns(board: Leaderboard) -> list[Column]:
    """The columns of `board`'s table: all but Δm% vs STL where the protocol has no single-task runs."""
    metrics = set(board.frame["metric"])
    return [c for c in COLUMNS if c.metric != DELTA_M_STL or DELTA_M_STL in metrics]


def column_legend(board: Leaderboard) -> dict[str, str]:
    """Header → legend entry, with the reference, the task threshold and the resamples filled in."""
    ref = reference_label(board.reference)
    return {
        c.header.format(ref=ref): c.legend.format(ref=ref, resamples=board.resamples, min_pos=board.min_positives)
        for c in shown_columns(board)
    }


def format_p(p: float, n: int, bootstrap: bool, raw: float | None = None) -> str:
    """`p=0.031`; — when untested. A bootstrap p whose raw (unadjusted) p `raw` (default: `p` itself) is at its
    resolution limit, no resample on the far side, is an upper bound: `p≤…`. A Holm-adjusted p inherits that bound
    (it is a maximum of multiples of raw p's no larger than `raw`, all then at the limit too)."""
    if not np.isfinite(p):
        return ""
    decided_by = p if raw is None else raw
    at_floor = bootstrap and n > 0 and decided_by <= 2 / (n + 1) * (1 + 1e-9)
    return f" p≤{p:.2g}" if at_floor else f" p={p:.2g}"


def display_table(board: Leaderboard) -> pd.DataFrame:
    """The leaderboard's display strings (`**…**` Markdown bold where significantly best), one row per variant."""
    ref = reference_label(board.reference)
    values = board.values()
    frame = board.frame.set_index(["variant", "metric"])
    reference_excluded = (board.reference, "timing_excluded") in frame.index
    rows = []
    for variant in board.variants():

        def get(metric: str, column: str = "value", variant: str = variant) -> float:
            key = (variant, metric)
            return float(frame.at[key, column]) if key in frame.index else NAN

        def cell(metric: str) -> str:
            text = number(metric)
            excluded = get("timing_excluded") > 0 or (metric == "step_ratio" and reference_excluded)
            return f"{text} {TIMING_MARK}" if metric in TIMED and excluded else text

        def number(metric: str) -> str:
            value = get(metric)
            if not np.isfinite(value):
                return "—"
            digits, signed = DIGITS[metric], metric in SIGNED
            text = _f(value, digits, signed)
            low, high = get(metric, "lo"), get(metric, "hi")
            if np.isfinite(low) and np.isfinite(high):
                text += f" [{_f(low, digits, signed)}, {_f(high, digits, signed)}]"
            if metric in ("delta_m_pct", DELTA_M_STL, "delta_auroc"):
                p_holm, raw = get(metric, "p_holm"), get(metric, "p")
                text += format_p(p_holm if np.isfinite(p_holm) else raw, int(get(metric, "n")), True, raw)
            elif metric == "delta_auroc_seeds":
                text += format_p(get(metric, "p"), 0, False)
            key = (variant, metric)  # noqa: B023 (called within this iteration)
            return f"**{text}**" if key in frame.index and bool(frame.at[key, "best"]) else text

        memory, kind = peak_memory(values, variant)
        complete = int(get("runs_complete")) if np.isfinite(get("runs_complete")) else 0
        others = [
            (m.removeprefix("runs_"), int(c))
            for (v, m), c in frame["value"].items()
            if v == variant and m.startswith("runs_") and m != "runs_complete"
        ]
        shown = {
            "runs": f"{complete}/{complete + sum(c for _, c in others)}"
            + (f" ({', '.join(f'{c} {s}' for s, c in others)})" if others else ""),
            "memory": f"{memory:.0f} {kind}" if np.isfinite(memory) else "—",
        }
        rows.append(
            {
                "method": variant,
                **{
                    c.header.format(ref=ref): shown[c.header] if c.metric is None else cell(c.metric)
                    for c in shown_columns(board)
                },
            }
        )
    return pd.DataFrame(rows)


def per_task_table(board: Leaderboard, metric: str = "auroc") -> pd.DataFrame:
    """Variant × task: the metric's seed mean and [95% interval]; ineligible tasks' headers marked †."""
    chosen = board.per_task[board.per_task["metric"] == metric] if not board.per_task.empty else board.per_task
    labelled = board.labelled if board.labelled is not None else [None] * len(board.tasks)
    headers = {
        t: f"{t} ({int(n)}{'' if k is None else f' of {int(k)}'}{'' if ok else ' †'})"
        for t, n, k, ok in zip(board.tasks, board.positives, labelled, board.eligible)
    }
    rows = []
    for variant in board.variants():
        mine = chosen[chosen["variant"] == variant].set_index("task") if not chosen.empty else chosen
        row = {"method": variant}
        for task in board.tasks:
            if task in getattr(mine, "index", []):
                r = mine.loc[task]
                row[headers[task]] = (
                    f"{r['value']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]" if np.isfinite(r["lo"]) else _f(r["value"], 3)
                )
            else:
                row[headers[task]] = "—"
        rows.append(row)
    return pd.DataFrame(rows)


def table_notes(board: Leaderboard) -> list[str]:
    """What every reader of the table must know: tasks left out, the resampling design, the bold rule,
    and the protocol's noise floor (the reference's own interval)."""
    ref = reference_label(board.reference)
    notes = []
    left = board.left_out()
    if left and len(left) == len(board.tasks):
        notes.append(
            f"No task has {board.min_positives} test positives (--min-positives), so no mean over tasks is "
            "shown and methods cannot be compared on this test split: " + ", ".join(f"{t} ({n})" for t, n in left) + "."
        )
    elif left:
        notes.append(
            f"Means leave out {len(left)} task(s) with fewer than {board.min_positives} test positives "
            f"(--min-positives): " + ", ".join(f"{t} ({n})" for t, n in left) + "."
        )
    else:
        notes.append(f"Every task has at least {board.min_positives} test positives; means cover all of them.")
    if board.labelled is not None:
        notes.append(
            "Labels are missing for part of the images: each task is scored on its labelled test images only "
            "(per task: " + ", ".join(f"{t} {int(k):,}" for t, k in zip(board.tasks, board.labelled)) + ")."
        )
    seeds = len(board.seeds)
    notes.append(
        f"Intervals: {board.resamples:,} bootstrap resamples of the {board.patients:,} test patients"
        + (
            f" and the {seeds} seeds jointly"
            if seeds > 1
            else " (one seed: the intervals show test-set sampling only; variation over seeds is not measured)"
        )
        + ". Holm adjustment over this protocol's methods, per column."
    )
    notes.append(BOLD_RULE.format(alpha=ALPHA))
    if DELTA_M_STL in set(board.frame["metric"]):
        notes.append(
            "STL is the single-task baseline: one network per task, each seed's "
            f"{len(board.tasks)} single-task runs joined into one row; Δm% vs STL is Δm% as defined."
        )
    else:
        notes.append(f"Δm% is measured against {ref}: this protocol has no single-task runs (`mtlbench run --stl`).")
    notes += seed_notes(board)
    notes += timing_notes(board.per_run)
    frame = board.frame.set_index(["variant", "metric"])
    key = (board.reference, "auroc")
    if key in frame.index and np.isfinite(frame.at[key, "lo"]):
        half = (frame.at[key, "hi"] - frame.at[key, "lo"]) / 2
        sd = frame.at[key, "sd"]
        notes.append(
            f"Noise floor: {ref}'s own mean AUROC is uncertain by ±{half:.3f} (95% interval half-width)"
            + (f", sd over seeds {sd:.3f}" if np.isfinite(sd) else "")
            + "; a difference between methods smaller than that is not evidence of a better method."
        )
    return notes


def _f(value: float, digits: int, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def seed_notes(board: Leaderboard) -> list[str]:
    """For each variant with complete runs of fewer seeds than the protocol: which seeds its columns average, and
    that each comparison with it uses only the seeds both sides have."""
    ref = reference_label(board.reference)

    def seeds_of(variant: str) -> list[int]:
        return sorted(int(s) for s in board.per_run.loc[board.per_run["variant"] == variant, "seed"])

    notes = []
    for variant in board.variants():
        seeds = seeds_of(variant)
        if not seeds or len(board.seeds) < 2 or seeds == sorted(board.seeds):
            continue
        shared = len(set(seeds) & set(seeds_of(board.reference)))
        notes.append(
            f"{variant}: its columns average seed(s) {', '.join(map(str, seeds))}, its complete runs of the "
            f"protocol's {', '.join(map(str, board.seeds))}; its Δ columns and every test of significance involving "
            "it compare on the seeds both sides have"
            + (f" (against {ref}: {shared} seed(s))." if variant != board.reference else ".")
        )
    return notes
