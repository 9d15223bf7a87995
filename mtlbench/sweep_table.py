"""The rich table printed at the end of `mtlbench run`: one row per method of the sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from rich.console import Group
from rich.table import Table
from rich.text import Text

from mtlbench.report.per_run import RELIABLE, TIMING_MARK, UNKNOWN, UNRELIABLE, timing_notes
from mtlbench.report.sweep_summary import compare_sweep
from mtlbench.results import readers
from mtlbench.results.store import ResultsStore
from mtlbench.training import RunResult


def _mean_sd(values: list[float], fmt: str) -> str:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return "—"
    if len(vals) == 1:
        return format(vals[0], fmt)
    return f"{format(np.mean(vals), fmt)} ± {format(np.std(vals, ddof=1), fmt)}"


def summary_table(results: Path, outcomes: Sequence[RunResult], reference: str = "ew") -> Group:
    """Per method over the sweep's seeds: runs, test mean AUROC [95% interval] and its difference from
    `reference` (the report's statistics), time, peak memory; then what the sweep can and cannot show.

    The time columns leave out runs timed on a loaded machine (their costs marked unreliable): such a
    cell is marked TIMING_MARK, and a note under the table names the runs and the load."""
    ids = [o.run_id for o in outcomes if o.run_id is not None]
    table = Table(
        title="test set (means over tasks with enough positives; [95% interval over patients and seeds])",
        title_justify="left",
    )
    for col in ("method", "runs", "AUROC", f"ΔAUROC vs {reference}", "time/run", "step", "peak memory"):
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    if not ids:
        return Group(table)
    with ResultsStore(results) as store:
        rows = readers.run_summaries(store, ids).to_dict("records")
    comparison = compare_sweep(results, ids, reference)
    by_method: dict[str, list] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    timings = []  # (method, seed, timing, other load) of every complete run, for the note
    for method in dict.fromkeys(o.method for o in outcomes):
        runs = by_method.get(method, [])
        done = [r for r in runs if r["status"] == "complete"]
        timing = {r["run_id"]: _timing(r) for r in done}
        timings += [(method, r["seed"], timing[r["run_id"]], r["other_load"]) for r in done]
        timed = [r for r in done if timing[r["run_id"]] != UNRELIABLE]
        mark = f" {TIMING_MARK}" if len(timed) < len(done) else ""
        status = f"{len(done)}/{len(runs)}" + ("" if len(done) == len(runs) else " ⚠")
        cuda = [r["peak_cuda_mb"] for r in done if pd.notna(r["peak_cuda_mb"])]
        memory = (
            f"{_mean_sd(cuda, '.0f')} MiB CUDA"
            if cuda
            else f"{_mean_sd([r['peak_rss_mb'] for r in done], '.0f')} MiB RSS"
            if done
            else "—"
        )
        table.add_row(
            method,
            status,
            _variant_cell(comparison.auroc, method),
            "reference" if method == reference else _variant_cell(comparison.delta, method),
            (_mean_sd([r["wall_s"] for r in timed], ".0f") + " s" if timed else "—") + mark if done else "—",
            (_mean_sd([1000 * r["median_step_s"] for r in timed], ".0f") + " ms" if timed else "—") + mark
            if done
            else "—",
            memory,
        )
    notes = [
        *comparison.notes,
        *timing_notes(pd.DataFrame(timings, columns=["variant", "seed", "timing", "other_load"])),
    ]
    return Group(table, *(Text(f"• {note}") for note in notes))


def _timing(row: dict) -> str:
    """RELIABLE, UNRELIABLE or UNKNOWN: may the run's stored timings be compared (mtlbench.report.leaderboard)."""
    flag = row.get("unreliable")
    return UNKNOWN if flag is None or pd.isna(flag) else UNRELIABLE if int(flag) else RELIABLE


def _variant_cell(cells: dict[str, str], method: str) -> str:
    """The cell of the method's variant (its name, or its name with hyperparameters in brackets)."""
    for variant, text in cells.items():
        if variant == method or variant.startswith(method + "["):
            return text
    return "—"
