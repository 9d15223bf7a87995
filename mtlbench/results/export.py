"""`mtlbench export`: the results database as flat CSV tables."""

from __future__ import annotations

from pathlib import Path

from mtlbench.results import readers
from mtlbench.results.store import ResultsStore


def export_csv(store: ResultsStore, folder: Path) -> list[Path]:
    """Write one CSV per table (runs, metrics, weights, costs, diagnostics, tuning) into `folder`; returns the paths.

    `folder` is the scratch folder of `owned.write_whole_folder`, swapped into place only once every
    table is written, so an export that fails half-way never mixes with an earlier one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for table in store.table_names():
        frame = readers.whole_table(store, table)
        target = folder / f"{table}.csv"
        frame.to_csv(target, index=False)
        written.append(target)
    return written
