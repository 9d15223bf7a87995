"""What the end of `mtlbench run` may claim: each method's mean AUROC and its difference from the
reference, with intervals and Holm-adjusted p, from the report's own statistics on this sweep's runs.

A sweep of one seed on a small test set cannot rank methods; the lines returned say what it can show.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mtlbench.report.leaderboard import (
    ALPHA,
    DEFAULT_MIN_POSITIVES,
    DEFAULT_REFERENCE,
    Leaderboard,
    leaderboard,
)
from mtlbench.report.per_run import timing_notes
from mtlbench.report.load import load_protocols
from mtlbench.report.table import BOLD_RULE, format_p, table_notes

SUMMARY_RESAMPLES = 1000


@dataclass(frozen=True)
class SweepComparison:
    """Per variant: AUROC cell and ΔAUROC-vs-reference cell (display strings); notes to print under the table."""

    auroc: dict[str, str]
    delta: dict[str, str]
    notes: list[str]


def compare_sweep(
    results: Path,
    run_ids: Sequence[int],
    reference: str = DEFAULT_REFERENCE,
    min_positives: int = DEFAULT_MIN_POSITIVES,
    resamples: int = SUMMARY_RESAMPLES,
) -> SweepComparison:
    """The sweep's runs (`run_ids`) compared as the report compares them, on the protocol holding most of them."""
    ids = set(int(i) for i in run_ids)
    protocols = [p for p in load_protocols(results) if ids & set(p.runs["run_id"].astype(int))]
    if not protocols:
        return SweepComparison({}, {}, [])
    protocol = max(protocols, key=lambda p: len(ids & set(p.runs["run_id"].astype(int))))
    protocol.runs = protocol.runs[protocol.runs["run_id"].astype(int).isin(ids)]
    board = leaderboard(protocol, protocol.reference_variant(reference), resamples, min_positives)
    return SweepComparison(_cells(board, "auroc", 3), _cells(board, "delta_auroc", 3, signed=True), sweep_notes(board))


def _cells(board: Leaderboard, metric: str, digits: int, signed: bool = False) -> dict[str, str]:
    rows = board.frame[board.frame["metric"] == metric].set_index("variant")
    out = {}
    for variant, r in rows.iterrows():
        if not np.isfinite(r["value"]):
            continue
        fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
        text = fmt.format(r["value"])
        if np.isfinite(r["lo"]):
            text += f" [{fmt.format(r['lo'])}, {fmt.format(r['hi'])}]"
        if signed:
            p = r["p_holm"] if np.isfinite(r["p_holm"]) else r["p"]
            text += format_p(p, int(r["n"]), True, r["p"]) + (" *" if np.isfinite(p) and p < ALPHA else "")
        out[str(variant)] = text
    return out


def sweep_notes(board: Leaderboard) -> list[str]:
    """The table's notes plus what a reader may conclude from this sweep (the notes on timings are the
    summary table's own: mtlbench.sweep_table)."""
    delta = board.frame[(board.frame["metric"] == "delta_auroc") & board.frame["p_holm"].notna()]
    significant = delta[delta["p_holm"] < ALPHA]
    verdict = (
        f"* = differs from {board.reference} with Holm-adjusted p < {ALPHA}: "
        + ", ".join(f"{v} ({r:+.3f})" for v, r in zip(significant["variant"], significant["value"]))
        if len(significant)
        else f"No method differs from {board.reference} beyond this sweep's noise (Holm-adjusted p < {ALPHA}): "
        "the table is not a ranking."
    )
    skip = {BOLD_RULE.format(alpha=ALPHA), *timing_notes(board.per_run)}
    # the sweep's table shows no Δm% column: its notes on Δm% belong to the report
    notes = [n for n in table_notes(board) if n not in skip and not n.startswith(("Δm%", "STL is"))]
    if not board.eligible.any():
        return notes
    return [*notes, verdict, "`mtlbench report` gives every metric with its interval."]
