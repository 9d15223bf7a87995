"""Typed reads of the results database, each returning a pandas DataFrame.

Callers outside `mtlbench.results` read through these functions rather than writing SQL, so the
schema has one home. An empty selection gives an empty frame with the named columns.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Sequence

import pandas as pd

from mtlbench.results.store import ResultsStore

RUN_COLUMNS = ("run_id", "method", "dataset", "seed", "config_hash", "config_json", "status", "error",
               "selected_epoch", "diverged_step")


def _frame(store: ResultsStore, sql: str, params: Sequence[object], columns: Sequence[str]) -> pd.DataFrame:
    rows = store.query(sql, params)
    return pd.DataFrame([tuple(r) for r in rows], columns=list(columns if not rows else rows[0].keys()))


def _in(run_ids: Sequence[int]) -> tuple[str, tuple[int, ...]]:
    ids = tuple(int(i) for i in run_ids)
    return ",".join("?" * len(ids)), ids


def finished_runs(store: ResultsStore) -> pd.DataFrame:
    """Every run that is no longer running (complete, failed, diverged, …), by run id."""
    sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE status != 'running' ORDER BY run_id"
    return _frame(store, sql, (), RUN_COLUMNS)


def split_info(store: ResultsStore, run_ids: Sequence[int]) -> dict:
    """How the first of `run_ids` that has one was split, from its stored data provenance (`info["image_split"]`,
    set by `--split random-image`); {} for the dataset's own split."""
    marks, ids = _in(run_ids)
    rows = store.query(f"SELECT data_json FROM runs WHERE run_id IN ({marks}) ORDER BY run_id", ids)
    for row in rows:
        split = json.loads(row["data_json"] or "{}").get("image_split")
        if isinstance(split, dict):
            return dict(split)
    return {}


def metrics_on_test(store: ResultsStore, run_ids: Sequence[int]) -> pd.DataFrame:
    """Per run and task: test loss, accuracy, AUROC and AP of the selected epoch."""
    marks, ids = _in(run_ids)
    columns = ("run_id", "task", "loss", "accuracy", "auroc", "ap")
    sql = f"SELECT {', '.join(columns)} FROM metrics WHERE split='test' AND run_id IN ({marks})"
    return _frame(store, sql, ids, columns)


def cross_tests(store: ResultsStore, run_ids: Sequence[int]) -> pd.DataFrame:
    """Per run, other dataset (`--test-dataset`) and task: labelled images, positives and the selected model's
    metrics on that dataset's test split."""
    marks, ids = _in(run_ids)
    columns = ("run_id", "dataset", "task", "images", "positives", "loss", "accuracy", "auroc", "ap")
    sql = f"SELECT {', '.join(columns)} FROM cross_tests WHERE run_id IN ({marks})"
    return _frame(store, sql, ids, columns)


def epoch_losses(store: ResultsStore, run_ids: Sequence[int]) -> pd.DataFrame:
    """Per run, split (train, val), epoch and task: the mean loss (the learning curves)."""
    marks, ids = _in(run_ids)
    columns = ("run_id", "split", "epoch", "task", "loss")
    sql = f"SELECT {', '.join(columns)} FROM metrics WHERE split IN ('train','val') AND run_id IN ({marks})"
    return _frame(store, sql, ids, columns)


def epoch_weights(store: ResultsStore, run_ids: Sequence[int]) -> pd.DataFrame:
    """Per run, epoch and task: the epoch's mean task weight (rows with step = −1)."""
    marks, ids = _in(run_ids)
    columns = ("run_id", "epoch", "task", "weight")
    sql = f"SELECT {', '.join(columns)} FROM weights WHERE step=-1 AND run_id IN ({marks})"
    return _frame(store, sql, ids, columns)


def run_costs(store: ResultsStore, run_ids: Sequence[int]) -> pd.DataFrame:
    """Per run: every column of the costs table (wall time, step times, peak memory, …)."""
    marks, ids = _in(run_ids)
    return _frame(store, f"SELECT * FROM costs WHERE run_id IN ({marks})", ids, ("run_id",))


def run_summaries(store: ResultsStore, run_ids: Sequence[int]) -> pd.DataFrame:
    """Per run: method, seed, status, test mean AUROC and accuracy over tasks, and its costs (with `unreliable`:
    1 where other processes loaded the machine while it trained, 0 where not, None where unknown)."""
    marks, ids = _in(run_ids)
    columns = ("run_id", "method", "seed", "status", "auroc", "accuracy", "wall_s", "median_step_s",
               "median_step_cpu_s", "peak_cuda_mb", "peak_rss_mb", "rss_scope", "other_load", "unreliable",
               "unreliable_reason")
    sql = f"""
        SELECT r.run_id, r.method, r.seed, r.status,
               (SELECT AVG(auroc) FROM metrics m WHERE m.run_id = r.run_id AND m.split = 'test') AS auroc,
               (SELECT AVG(accuracy) FROM metrics m WHERE m.run_id = r.run_id AND m.split = 'test') AS accuracy,
               c.wall_s, c.median_step_s, c.median_step_cpu_s, c.peak_cuda_mb, c.peak_rss_mb, c.rss_scope,
               c.other_load, c.unreliable, c.unreliable_reason
        FROM runs r LEFT JOIN costs c ON c.run_id = r.run_id
        WHERE r.run_id IN ({marks}) ORDER BY r.run_id"""
    return _frame(store, sql, ids, columns)


TUNING_COLUMNS = ("study", "method", "budget", "trial_seed", "role", "idx", "config_hash", "values_json", "selected")


def tuning_rows(store: ResultsStore) -> pd.DataFrame:
    """Every row of the tuning table: per study, its trials and the selected configuration's final runs."""
    sql = f"SELECT {', '.join(TUNING_COLUMNS)} FROM tuning ORDER BY study, role DESC, idx"
    return _frame(store, sql, (), TUNING_COLUMNS)


def cell_outcomes(store: ResultsStore, config_hashes: Sequence[str]) -> pd.DataFrame:
    """Per cell (config_hash) that has a run: its run, dataset, status and the validation mean AUROC
    over tasks at its selected epoch (NULL unless complete; a task without an AUROC is left out of the
    mean). Of several rows of one cell, the final result (complete, diverged, oom) or else the latest."""
    columns = ("config_hash", "run_id", "dataset", "status", "val_auroc")
    hashes = tuple(dict.fromkeys(str(h) for h in config_hashes))
    if not hashes:
        return pd.DataFrame(columns=list(columns))
    marks = ",".join("?" * len(hashes))
    sql = f"""
        SELECT r.config_hash, r.run_id, r.dataset, r.status,
               (SELECT AVG(m.auroc) FROM metrics m WHERE m.run_id = r.run_id AND m.split = 'val'
                AND m.epoch = r.selected_epoch) AS val_auroc
        FROM runs r WHERE r.config_hash IN ({marks})
        ORDER BY r.config_hash, r.status IN ('complete', 'diverged', 'oom'), r.run_id"""
    frame = _frame(store, sql, hashes, columns)
    return frame.drop_duplicates("config_hash", keep="last").reset_index(drop=True)


def whole_table(store: ResultsStore, table: str) -> pd.DataFrame:
    """Every row of one of the database's tables (`ResultsStore.table_names`), as stored."""
    if table not in store.table_names():
        raise ValueError(f"no table {table!r} in the results database")
    return pd.read_sql_query(f"SELECT * FROM {table}", store.conn)


def single_task_validation(store: ResultsStore) -> pd.DataFrame:
    """Every complete single-task (`stl`) run's validation accuracy at its selected epoch: run_id, seed,
    config_json, task, accuracy (one row per run: a single-task run has one task)."""
    columns = ("run_id", "seed", "config_json", "task", "accuracy")
    sql = """SELECT r.run_id, r.seed, r.config_json, m.task, m.accuracy FROM runs r JOIN metrics m
        ON m.run_id = r.run_id AND m.split = 'val' AND m.epoch = r.selected_epoch
        WHERE r.method = 'stl' AND r.status = 'complete' ORDER BY r.run_id"""
    return _frame(store, sql, (), columns)


# What the runs computed, each row led by its run's method and seed, in a fixed order. Costs and
# timings are left out: they are measurements of the machine, not results of the computation.
COMPUTED_RESULTS = {
    "runs": "SELECT method, seed, config_hash, status FROM runs ORDER BY method, seed, config_hash",
    "metrics": "SELECT r.method, r.seed, r.config_hash, m.split, m.epoch, m.task, m.loss, m.accuracy, m.auroc, m.ap "
    "FROM metrics m JOIN runs r USING (run_id) ORDER BY r.method, r.seed, r.config_hash, m.split, m.epoch, m.task",
    "weights": "SELECT r.method, r.seed, r.config_hash, w.epoch, w.step, w.task, w.weight "
    "FROM weights w JOIN runs r USING (run_id) ORDER BY r.method, r.seed, r.config_hash, w.epoch, w.step, w.task",
    "predictions": "SELECT r.method, r.seed, r.config_hash, p.split, p.epoch, p.image_ids, p.labels, p.probs "
    "FROM predictions p JOIN runs r USING (run_id) ORDER BY r.method, r.seed, r.config_hash, p.split, p.epoch",
    "cross_tests": "SELECT r.method, r.seed, r.config_hash, x.dataset, x.task, x.images, x.positives, x.loss, "
    "x.accuracy, x.auroc, x.ap FROM cross_tests x JOIN runs r USING (run_id) "
    "ORDER BY r.method, r.seed, r.config_hash, x.dataset, x.task",
    "diagnostics": "SELECT r.method, r.seed, r.config_hash, d.name, d.value "
    "FROM diagnostics d JOIN runs r USING (run_id) ORDER BY r.method, r.seed, r.config_hash, d.name",
}


def computed_results(path: Path) -> dict[str, list[tuple]]:
    """Every number the runs of a database computed, by table (`COMPUTED_RESULTS`), read without writing.

    Two databases hold the same results exactly when these are equal: the check behind the
    determinism tests and `benchmarks/bit_identity.py`.
    """
    return {name: rows_read_only(path, sql) for name, sql in COMPUTED_RESULTS.items()}


def rows_read_only(path: Path, sql: str) -> list[tuple]:
    """All rows of one query on a results database opened read-only: safe beside a process writing it."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()
