"""Combining results databases (one per shard or job) into one: `mtlbench merge OUT IN…`.

A cell is its identity (`runs.config_hash`: method, seed, protocol, data, resolved hyperparameters). Per cell:
a result (complete, diverged, out of memory) replaces a run that is not one (failed, interrupted, or running in
a process that stopped beating), as `run` restarts such a run; a run still being trained (recent heartbeat) is
never touched: the merge is refused;
the same result met again (a second merge of the same file) is left alone, so merging is idempotent; two
files holding *different* results for one cell are refused, naming the cell, and nothing is written. Each
run is copied whole: its status, metrics, weights, diagnostics, predictions, costs and cross-dataset tests.
Tuning rows (linked by identity) are copied once. Everything lands in one transaction.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from mtlbench.errors import UserError
from mtlbench.results.leases import STALE_AFTER_S
from mtlbench.results.schema import FINAL_STATUSES
from mtlbench.results.store import ResultsStore

RUN_TABLES = ("metrics", "weights", "diagnostics", "predictions", "costs", "cross_tests")
# what a run computed (not its timings): two copies of one cell must agree on these to be the same result
RESULT_QUERIES = {
    "metrics": "SELECT split, epoch, task, loss, accuracy, auroc, ap FROM metrics WHERE run_id=? ORDER BY 1, 2, 3",
    "weights": "SELECT epoch, step, task, weight FROM weights WHERE run_id=? ORDER BY 1, 2, 3",
    "predictions": "SELECT split, epoch, image_ids, probs FROM predictions WHERE run_id=? ORDER BY 1",
}


@dataclass
class MergeSummary:
    """What a merge did, per input file and in all."""

    copied: int = 0  # runs added to the output
    replaced: int = 0  # runs that were not results, replaced by a result
    already: int = 0  # results the output held already (the same numbers)
    kept: int = 0  # runs that were not results, left out because the output has the cell
    files: list[str] = field(default_factory=list)


def database_files(paths: Sequence[Path], out: Path | None = None) -> list[Path]:
    """The databases named by `paths`: files as given, folders as the *.sqlite files in them (sorted); `out`
    left out. A path that is neither, or a folder without databases, is a one-line UserError."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            inside = sorted(p for p in path.glob("*.sqlite") if p.is_file())
            if not inside:
                raise UserError(f"{path} is a folder with no *.sqlite results database in it; pass a results file")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path} does not exist: pass results databases or folders of them")
    chosen = [p for p in dict.fromkeys(found) if out is None or p.resolve() != Path(out).resolve()]
    if not chosen:
        raise UserError("no results database to merge (only the output itself was given)")
    return chosen


def merge_databases(out: Path, inputs: Sequence[Path]) -> MergeSummary:
    """Merge `inputs` into the database `out` (created if absent); see the module docstring."""
    for path in inputs:
        with ResultsStore(path):  # a database of an older schema is migrated first, as `run` would
            pass
    summary = MergeSummary()
    with ResultsStore(out) as store:
        conn = store.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for path in inputs:
                src = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=60)
                try:
                    _merge_one(conn, src, path, summary)
                finally:
                    src.close()
                summary.files.append(str(path))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return summary


def _merge_one(conn: sqlite3.Connection, src: sqlite3.Connection, path: Path, summary: MergeSummary) -> None:
    rows = src.execute("SELECT run_id, config_hash, status, method, seed FROM runs ORDER BY run_id").fetchall()
    for run_id, config_hash, status, method, seed in rows:
        existing = conn.execute(
            "SELECT run_id, status FROM runs WHERE config_hash=? ORDER BY run_id", (config_hash,)
        ).fetchall()
        final_here = [r for r, s in existing if s in FINAL_STATUSES]
        if status not in FINAL_STATUSES:
            if existing:
                summary.kept += 1
                continue
        elif final_here:
            if _results(conn, final_here[0]) != _results(src, run_id):
                raise UserError(
                    f"{path} and the merged output hold different results for the same cell ({method} seed {seed}, "
                    f"identity {config_hash}): keep one of them (delete the other run) and merge again; nothing "
                    "was written"
                )
            summary.already += 1
            continue
        elif existing:
            _check_not_live(conn, [old for old, _ in existing], out_label=str(path))
            # runs that are not results give way to the result, as `run` restarts a failed attempt's rows
            for old, _ in existing:
                for table in RUN_TABLES:
                    conn.execute(f"DELETE FROM {table} WHERE run_id=?", (old,))
                conn.execute("DELETE FROM runs WHERE run_id=?", (old,))
            summary.replaced += 1
        _copy_run(conn, src, run_id)
        summary.copied += 1
    _copy_rows(conn, src, "tuning", "", (), ignore=True)


def _check_not_live(conn: sqlite3.Connection, run_ids: list[int], out_label: str) -> None:
    """UserError when one of `run_ids` in the output is being trained right now (running, recent heartbeat):
    the output is a live sweep's database, and its rows are not the merge's to replace."""
    marks = ", ".join("?" * len(run_ids))
    rows = conn.execute(
        f"SELECT method, seed, owner_host, owner_pid, heartbeat_at FROM runs WHERE run_id IN ({marks}) "
        "AND status='running'",
        run_ids,
    ).fetchall()
    for method, seed, host, pid, beat in rows:
        if beat is not None and time.time() - beat <= STALE_AFTER_S:
            raise UserError(
                f"the merged output is being written by a running sweep ({method} seed {seed} on {host}, process "
                f"{pid}) while {out_label} holds a result for that cell: merge into a new file, or wait until it "
                "ends; nothing was written"
            )


def _results(conn: sqlite3.Connection, run_id: int) -> dict[str, list[tuple]]:
    return {name: conn.execute(sql, (run_id,)).fetchall() for name, sql in RESULT_QUERIES.items()}


def _copy_run(conn: sqlite3.Connection, src: sqlite3.Connection, run_id: int) -> None:
    columns = [r[1] for r in conn.execute("PRAGMA table_info(runs)") if r[1] != "run_id"]
    row = src.execute(f"SELECT {', '.join(columns)} FROM runs WHERE run_id=?", (run_id,)).fetchone()
    marks = ", ".join("?" * len(columns))
    new_id = conn.execute(f"INSERT INTO runs ({', '.join(columns)}) VALUES ({marks})", row).lastrowid
    for table in RUN_TABLES:
        _copy_rows(conn, src, table, "WHERE run_id=?", (run_id,), run_id=new_id)


def _copy_rows(
    conn: sqlite3.Connection,
    src: sqlite3.Connection,
    table: str,
    where: str,
    params: tuple,
    run_id: int | None = None,
    ignore: bool = False,
) -> None:
    """Rows of `table` in `src` (`where`) into `conn`, with `run_id` put in their run_id column if given."""
    columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    rows = src.execute(f"SELECT {', '.join(columns)} FROM {table} {where}", params).fetchall()
    if run_id is not None:
        at = columns.index("run_id")
        rows = [(*r[:at], run_id, *r[at + 1 :]) for r in rows]
    verb = "INSERT OR IGNORE" if ignore else "INSERT"
    conn.executemany(f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)
