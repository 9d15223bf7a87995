"""Is a results database what mtlbench wrote? Damage is one line naming the file and what is wrong.

`run` (before any data work), `report` and `export` call `check_intact` on an existing database.
It finds, in this order: a table or column missing, text (or an infinity) where a number belongs,
a `config_json` that is not the run's JSON object, two complete runs of one cell, and a run stored
as complete whose metrics are missing. The last one `run` repairs instead (it trains the cell
again, see `ResultsStore.claim_run`), so `run` asks not to be told about it.
"""

from __future__ import annotations

import json
import sqlite3
from functools import lru_cache

from mtlbench.errors import UserError
from mtlbench.results.store import HOLLOW_RUN_SQL, SCHEMA, ResultsStore

# tables whose REAL columns hold only finite numbers or NULL: mtlbench writes non-finite metrics,
# diagnostics and costs as NULL (store._num); weights are the method's own values, kept as they are
FINITE_TABLES = ("metrics", "diagnostics", "costs", "cross_tests")
RESTORE = "restore the file from a backup"


class DamagedDatabase(UserError):
    """The results database holds something mtlbench never writes (a tampered or damaged file)."""


@lru_cache(maxsize=1)
def expected_columns() -> dict[str, dict[str, str]]:
    """{table: {column: declared type}} of the current schema, read from store.SCHEMA built in memory."""
    con = sqlite3.connect(":memory:")
    try:
        con.executescript(SCHEMA)
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: {r[1]: r[2].upper() for r in con.execute(f"PRAGMA table_info({t})")}
                for t in tables if not t.startswith("sqlite_")}
    finally:
        con.close()


def check_intact(store: ResultsStore, hollow_ok: bool = False) -> None:
    """Raise DamagedDatabase, naming `store.path` and the damage, if the database is not as mtlbench wrote it.

    `hollow_ok`: a run stored as complete without its metrics is no damage to the caller (`run`
    trains such a cell again and says so).
    """
    try:
        _check_tables(store)
        _check_numbers(store)
        _check_configs(store)
        _check_duplicates(store)
        if not hollow_ok:
            _check_hollow(store)
    except sqlite3.DatabaseError as exc:  # damage below the tables (a page that does not decode)
        raise DamagedDatabase(f"{store.path} is damaged: {exc}; {RESTORE}") from None


def _damaged(store: ResultsStore, what: str, fix: str) -> DamagedDatabase:
    return DamagedDatabase(f"{store.path} is damaged: {what}; {fix}")


def _run_label(store: ResultsStore, run_id: object) -> str:
    row = store.conn.execute("SELECT method, seed FROM runs WHERE run_id=?", (run_id,)).fetchone()
    return f"run {run_id} ({row[0]} seed {row[1]})" if row else f"run {run_id}"


def _delete_or_restore(run_id: object) -> str:
    return f"{RESTORE}, or delete run {run_id} and rerun the same `mtlbench run` command to train it again"


def _check_tables(store: ResultsStore) -> None:
    present = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    for table, columns in expected_columns().items():
        if table not in present:
            raise _damaged(store, f"its table {table!r} is missing (dropped?)",
                           f"{RESTORE} or pass --results PATH for a new database")
        have = {r[1] for r in store.conn.execute(f"PRAGMA table_info({table})")}
        lacking = [c for c in columns if c not in have]
        if lacking:
            raise _damaged(store, f"its table {table!r} lacks column(s) {', '.join(lacking)}",
                           f"{RESTORE} or pass --results PATH for a new database")


def _check_numbers(store: ResultsStore) -> None:
    """Text, a blob, or (in FINITE_TABLES) an infinity in a REAL or INTEGER column of a stored run."""
    for table, columns in expected_columns().items():
        numeric = [c for c, kind in columns.items() if kind in ("REAL", "INTEGER") and c != "run_id"]
        if not numeric or "run_id" not in columns:
            continue
        tests = {c: _bad_number_sql(c, finite=table in FINITE_TABLES and columns[c] == "REAL") for c in numeric}
        owned = "" if table == "runs" else " AND run_id IN (SELECT run_id FROM runs)"  # orphans are never read
        row = store.conn.execute(
            f"SELECT run_id FROM {table} WHERE ({' OR '.join(tests.values())}){owned} LIMIT 1").fetchone()
        if row is None:
            continue
        for column, test in tests.items():
            found = store.conn.execute(
                f"SELECT run_id, {column}, COUNT(*) OVER () FROM {table} WHERE {test}{owned} LIMIT 1").fetchone()
            if found:
                run_id, value, count = found
                kind = "text" if isinstance(value, str) else "bytes" if isinstance(value, bytes) else "the value"
                raise _damaged(
                    store,
                    f"{table}.{column} holds {kind} {value!r} where a finite number belongs "
                    f"({count:,} row(s), the first of {_run_label(store, run_id)})",
                    _delete_or_restore(run_id),
                )


def _bad_number_sql(column: str, finite: bool) -> str:
    test = f"typeof({column}) IN ('text', 'blob')"  # what is left of SQLite's five types: no number, no NULL
    return f"({test} OR {column} IN (9e999, -9e999))" if finite else f"({test})"


def _check_configs(store: ResultsStore) -> None:
    for run_id, method, seed, text in store.conn.execute("SELECT run_id, method, seed, config_json FROM runs"):
        run = f"run {run_id} ({method} seed {seed})"
        try:
            config = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise _damaged(store, f"the config_json of {run} is not valid JSON ({exc})",
                           _delete_or_restore(run_id)) from None
        if not isinstance(config, dict) or config.get("method") != method or config.get("seed") != seed:
            got = type(config).__name__ if not isinstance(config, dict) else (
                f"method {config.get('method')!r}, seed {config.get('seed')!r}")
            raise _damaged(store, f"the config_json of {run} is not that run's settings (it holds {got})",
                           _delete_or_restore(run_id))


def _check_duplicates(store: ResultsStore) -> None:
    row = store.conn.execute(
        "SELECT method, seed, config_hash, GROUP_CONCAT(run_id, ', ') FROM runs WHERE status='complete'"
        " GROUP BY config_hash HAVING COUNT(*) > 1 ORDER BY MIN(run_id) LIMIT 1").fetchone()
    if row:
        method, seed, config_hash, ids = row
        raise _damaged(
            store,
            f"the cell {method} seed {seed} (config {config_hash}) has {len(ids.split(','))} complete runs "
            f"({ids}) where mtlbench keeps one",
            f"{RESTORE}, or delete all of them but one",
        )


def _check_hollow(store: ResultsStore) -> None:
    row = store.conn.execute(f"SELECT run_id FROM runs WHERE {HOLLOW_RUN_SQL} ORDER BY run_id LIMIT 1").fetchone()
    if row:
        run = _run_label(store, row[0])
        raise _damaged(
            store,
            f"{run} is stored as complete but its metrics are missing",
            f"rerun the same `mtlbench run` command (it trains that run again), or {RESTORE}",
        )
