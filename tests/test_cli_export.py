"""`mtlbench export`: the results database as flat CSV tables, read from the fixture database
(tests/results_fixture.py; no training)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd

from mtlbench.cli import main


def test_export_csv_is_the_database_table_by_table(results_db, tmp_path: Path) -> None:
    path, record = results_db
    out = tmp_path / "export"
    before = path.read_bytes()
    assert main(["export", "--format", "csv", "--results", str(path), "--out", str(out)]) == 0
    assert path.read_bytes() == before
    tables = ("runs", "metrics", "weights", "costs", "diagnostics", "tuning")  # predictions are blobs: not exported
    assert sorted(p.name for p in out.iterdir()) == sorted([".mtlbench-export", *(f"{t}.csv" for t in tables)])
    with closing(sqlite3.connect(path)) as con:
        for table in tables:
            stored = pd.read_sql(f"SELECT * FROM {table}", con)
            exported = pd.read_csv(out / f"{table}.csv", keep_default_na=False, na_values=[""])
            assert list(exported.columns) == list(stored.columns), table
            # every value, at full precision (NULL as an empty cell; a traceback's newlines quoted)
            pd.testing.assert_frame_equal(exported, stored, check_dtype=False, check_exact=True, obj=table)
    runs = pd.read_csv(out / "runs.csv")
    assert dict(zip(zip(runs["method"], runs["seed"]), runs["status"])) == record.status
    assert runs.loc[runs["status"] == "failed", "error"].item().count("\n") == 5  # the stored traceback, whole
