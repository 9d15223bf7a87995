"""`mtlbench export`: the results database as flat CSV tables."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mtlbench.store import ResultsStore


def export_csv(store: ResultsStore, out_dir: Path) -> list[Path]:
    """Write one CSV per table (runs, metrics, weights, costs), each atomically; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table in store.table_names():
        frame = pd.read_sql_query(f"SELECT * FROM {table}", store.conn)
        target = out_dir / f"{table}.csv"
        tmp = target.with_suffix(".csv.tmp")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, target)
        written.append(target)
    return written
