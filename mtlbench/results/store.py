"""The results store: one SQLite file holding runs, per-epoch per-task metrics, weights, costs."""

from __future__ import annotations

import io
import json
import sqlite3
import tempfile
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

import numpy as np

from mtlbench.results.leases import Owner
from mtlbench.errors import UserError

from mtlbench.results.schema import (FINAL_STATUSES, HOLLOW_NOTE, HOLLOW_RUN_SQL, RENAMED_METHODS,  # noqa: F401
                                    SCHEMA, SCHEMA_VERSION, STATUSES, init_schema)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def now_text() -> str:
    """The time as the database stores it (UTC, ISO 8601, seconds): e.g. a `Force` cutoff."""
    return _now()


# --force as a claim sees it: False keeps final results, True reruns them, a time (now_text) reruns those that
# ended before it: the time a sweep of several processes (workers, array tasks, requeued attempts) began
Force = Union[bool, str]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _num(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


@dataclass(frozen=True)
class RunKey:
    """The identity of a cell: what to look up before training it."""

    method: str
    dataset: str
    seed: int
    config_hash: str


class StoreWriteError(UserError):
    """The results database could not be written (disk full, read-only, locked too long)."""


class ClaimLost(Exception):
    """Another process took this run over (this one was silent too long): stop without writing."""


@dataclass(frozen=True)
class ClaimResult:
    """What `claim_run` decided for a cell.

    `action` is "run" (the caller owns `run_id` now; `taken_over` when it is an earlier,
    unfinished attempt that may have a checkpoint), "done" (a final result exists: `status`), or
    "busy" (a live process is running it).
    """

    action: str
    run_id: int
    status: str = ""
    taken_over: bool = False
    note: str = ""  # why a stored row was not trusted (HOLLOW_NOTE), for the user


class ResultsStore:
    """Transactional access to the results database.

    Several processes may write one database at once (one per GPU): it is opened in WAL mode,
    every write is a short transaction, and a cell is claimed before it runs (`claim_run`).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._depth = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=60)
        except (OSError, sqlite3.Error) as exc:
            raise UserError(f"cannot open results database {self.path}: {exc}") from None
        self.conn.execute("PRAGMA foreign_keys = ON")
        try:
            init_schema(self.conn, self.path)
        except UserError:
            self.conn.close()
            raise
        except sqlite3.OperationalError as exc:
            self.conn.close()
            raise StoreWriteError(self._write_error(exc)) from None
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise UserError(f"{self.path} is not a usable mtlbench results database: {exc}") from None

    @staticmethod
    def check_writable(path: str | Path) -> None:
        """Fail in a moment, before any data or training work, if results cannot be written at `path`.

        An existing database is opened (a newer schema is refused, an older one migrated) and
        written once; a new one is not created yet, only its folder is tested.
        """
        path = Path(path)
        if path.exists():
            with ResultsStore(path) as store, store.transaction() as c:
                c.execute("UPDATE schema_version SET version=version")
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path.parent):
                pass
        except OSError as exc:
            raise StoreWriteError(
                f"cannot write the results database {path}: {exc.strerror or exc}; make {path.parent} writable "
                "or pass --results PATH in a writable folder"
            ) from None

    def _write_error(self, exc: BaseException) -> str:
        text = str(exc)
        if "readonly" in text or "unable to open" in text:
            hint = f"make {self.path.parent} writable or pass --results PATH in a writable folder"
        elif "full" in text:
            hint = "free disk space and rerun the same command: complete runs are kept, an interrupted one resumes"
        elif "locked" in text or "busy" in text:
            hint = "another process held the database too long; rerun the same command"
        else:
            hint = "check the file and the disk, then rerun the same command"
        return f"cannot write the results database {self.path}: {text}; {hint}"

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """All writes inside land together or not at all; nested transactions join the outer one.

        `immediate` takes the write lock at the start (for read-then-write decisions such as a
        claim). A failed write (disk full, read-only) is a StoreWriteError: one line for the CLI.
        """
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            with self.conn:
                if immediate:
                    self.conn.execute("BEGIN IMMEDIATE")
                yield self.conn
        except sqlite3.OperationalError as exc:
            raise StoreWriteError(self._write_error(exc)) from None
        finally:
            self._depth = 0

    # --- runs -------------------------------------------------------------------------------
    def claim_run(
        self,
        key: RunKey,
        config_json: str,
        env: dict[str, Any],
        weight_normalization: str,
        owner: Owner,
        force: "Force" = False,
    ) -> ClaimResult:
        """Decide, atomically across processes, whether this process runs the cell `key`.

        A final result (complete, diverged, oom) is kept unless `force` (True: any; a time from `now_text`: one
        that ended before it, so that several processes forcing one sweep rerun each cell once); a cell that a live
        process is running is left to it; otherwise the cell is ours: an earlier unfinished
        attempt (failed, interrupted, or running in a dead process) is taken over with its
        rows, so that it can resume from its checkpoint, or a new run row is inserted. A row
        stored as complete whose metrics are missing (HOLLOW_RUN_SQL) is no result: it is deleted
        and the cell trained again, which the claim's `note` says.
        """
        with self.transaction(immediate=True) as c:
            found = c.execute(
                f"SELECT run_id, status, owner_token, owner_host, owner_pid, heartbeat_at, {HOLLOW_RUN_SQL}, ended_at"
                " FROM runs WHERE config_hash=? ORDER BY run_id DESC",
                (key.config_hash,),
            ).fetchall()
            hollow = [r[0] for r in found if r[6]]  # "complete" without its metrics: not a result, replaced
            ended = {r[0]: r[7] or "" for r in found}
            rows = [r[:6] for r in found if not r[6]]
            c.executemany("DELETE FROM runs WHERE run_id=?", [(r,) for r in hollow])
            note = HOLLOW_NOTE if hollow else ""
            for run_id, status, token, host, pid, beat in rows:
                if status == "running" and owner.other_is_alive(token, host, pid, beat):
                    return ClaimResult("busy", run_id, status)
            if force is not True:  # a time: only results that ended before it are rerun (later ones are this sweep's)
                for run_id, status, *_ in rows:
                    if status in FINAL_STATUSES and (not force or ended[run_id] >= force):
                        return ClaimResult("done", run_id, status)
            unfinished = [r[0] for r in rows if r[1] not in FINAL_STATUSES]
            stale = [r[0] for r in rows if r[1] in FINAL_STATUSES] + unfinished[1:]
            c.executemany("DELETE FROM runs WHERE run_id=?", [(r,) for r in stale])
            env_json = json.dumps(env, sort_keys=True)
            if unfinished:
                run_id = unfinished[0]
                c.execute(
                    "UPDATE runs SET status='running', ended_at=NULL, error=NULL, config_json=?, env_json=?,"
                    " weight_normalization=?, owner_host=?, owner_pid=?, owner_token=?, heartbeat_at=? WHERE run_id=?",
                    (config_json, env_json, weight_normalization, owner.host, owner.pid, owner.token, time.time(),
                     run_id),
                )
                return ClaimResult("run", run_id, "running", taken_over=True, note=note)
            cur = c.execute(
                "INSERT INTO runs (method, dataset, seed, config_hash, config_json, status, started_at, env_json,"
                " weight_normalization, owner_host, owner_pid, owner_token, heartbeat_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key.method, key.dataset, key.seed, key.config_hash, config_json, "running", _now(), env_json,
                 weight_normalization, owner.host, owner.pid, owner.token, time.time()),
            )
            return ClaimResult("run", int(cur.lastrowid), "running", note=note)

    def claim_is_alive(self, run_id: int, owner: Owner) -> bool:
        """Whether another live process is running `run_id` now (as `claim_run` would judge it)."""
        row = self.conn.execute(
            "SELECT status, owner_token, owner_host, owner_pid, heartbeat_at FROM runs WHERE run_id=?", (run_id,)
        ).fetchone()
        return row is not None and row[0] == "running" and owner.other_is_alive(*row[1:])

    def interrupt_running(self, why: str) -> int:
        """Mark every running run interrupted (`why` as its error); for a database that only the caller writes,
        where a running row can only be a dead process's. Returns how many."""
        with self.transaction() as c:
            return c.execute("UPDATE runs SET status='interrupted', error=? WHERE status='running'", (why,)).rowcount

    def assert_owner(self, run_id: int, owner: Owner) -> None:
        """Raise ClaimLost unless `owner` still holds `run_id` (call inside the transaction that writes)."""
        row = self.conn.execute("SELECT owner_token, status FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None or row[0] != owner.token or row[1] != "running":
            raise ClaimLost(f"run {run_id} was taken over by another process")

    def restart_run(self, run_id: int) -> None:
        """Forget everything an attempt of `run_id` wrote (it restarts from epoch 0)."""
        with self.transaction() as c:
            for table in ("metrics", "weights", "diagnostics", "predictions", "costs", "cross_tests"):
                c.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
            c.execute("UPDATE runs SET started_at=?, resumes=0 WHERE run_id=?", (_now(), run_id))

    def rewind_run(self, run_id: int, epoch: int) -> None:
        """Keep what `run_id` wrote before `epoch` (its checkpoint's) and count one resume."""
        with self.transaction() as c:
            c.execute("DELETE FROM metrics WHERE run_id=? AND (epoch>=? OR split='test')", (run_id, epoch))
            c.execute("DELETE FROM weights WHERE run_id=? AND epoch>=?", (run_id, epoch))
            for table in ("diagnostics", "predictions", "costs", "cross_tests"):
                c.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
            c.execute("UPDATE runs SET resumes=resumes+1 WHERE run_id=?", (run_id,))

    def set_data_info(self, run_id: int, info: dict[str, Any]) -> None:
        """Record the dataset's provenance for a run."""
        with self.transaction() as c:
            c.execute("UPDATE runs SET data_json=? WHERE run_id=?", (json.dumps(info, sort_keys=True, default=str), run_id))

    def finish_run(
        self,
        run_id: int,
        status: str,
        *,
        selected_epoch: int | None = None,
        diverged_step: int | None = None,
        error: str | None = None,
    ) -> None:
        """Set a run's final status."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status}")
        with self.transaction() as c:
            c.execute(
                "UPDATE runs SET status=?, ended_at=?, selected_epoch=?, diverged_step=?, error=? WHERE run_id=?",
                (status, _now(), selected_epoch, diverged_step, error, run_id),
            )

    # --- per-run rows -----------------------------------------------------------------------
    def add_metrics(self, run_id: int, split: str, epoch: int, tasks: Sequence[str], metrics: Any) -> None:
        """Per-task metrics of one split at one epoch (a metrics.TaskMetrics)."""
        rows = [
            (run_id, split, epoch, task, _num(metrics.loss[i]), _num(metrics.accuracy[i]),
             _num(metrics.auroc[i]), _num(metrics.ap[i]))
            for i, task in enumerate(tasks)
        ]
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?,?,?,?)", rows)

    def add_cross_test(
        self, run_id: int, dataset: str, tasks: Sequence[str], metrics: Any, labels: np.ndarray
    ) -> None:
        """Per-task metrics of the selected model on another dataset's test split (`--test-dataset`), with each
        task's labelled images and positives there."""
        labels = np.asarray(labels, dtype=np.float64)
        counts, pos = (~np.isnan(labels)).sum(axis=0), np.nansum(labels, axis=0)
        rows = [
            (run_id, dataset, task, int(counts[i]), int(pos[i]), _num(metrics.loss[i]), _num(metrics.accuracy[i]),
             _num(metrics.auroc[i]), _num(metrics.ap[i]))
            for i, task in enumerate(tasks)
        ]
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO cross_tests VALUES (?,?,?,?,?,?,?,?,?)", rows)

    def add_train_stats(self, run_id: int, epoch: int, tasks: Sequence[str], loss: np.ndarray, acc: np.ndarray) -> None:
        """Per-task training loss and accuracy of one epoch."""
        rows = [(run_id, "train", epoch, t, _num(loss[i]), _num(acc[i]), None, None) for i, t in enumerate(tasks)]
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?,?,?,?)", rows)

    def add_weights(self, run_id: int, epoch: int, steps: Sequence[int], tasks: Sequence[str], weights: np.ndarray) -> None:
        """Task weights: one row of `weights` (len(steps) × T) per step (-1 = the whole epoch)."""
        rows = [
            (run_id, epoch, int(s), t, float(weights[i, j]))
            for i, s in enumerate(steps)
            for j, t in enumerate(tasks)
        ]
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO weights VALUES (?,?,?,?,?)", rows)

    def add_predictions(
        self, run_id: int, split: str, epoch: int, image_ids: Sequence[str], labels: np.ndarray, probs: np.ndarray,
        patient_ids: Sequence[str] | None = None,
    ) -> None:
        """Per-image probabilities of one split at the selected epoch (for thresholds, paired tests and the
        patient-clustered bootstrap: `patient_ids`, one per image, in the same order)."""
        patients = None if patient_ids is None else zlib.compress("\n".join(map(str, patient_ids)).encode())
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO predictions (run_id, split, epoch, image_ids, labels, probs, patient_ids) "
                "VALUES (?,?,?,?,?,?,?)",
                (run_id, split, epoch, zlib.compress("\n".join(map(str, image_ids)).encode()),
                 _npy(_stored_labels(labels)), _npy(np.asarray(probs, dtype=np.float32)), patients),
            )

    def patient_ids(self, run_id: int, split: str) -> list[str] | None:
        """The patient of each stored prediction's image, in row order; None when not stored (before schema 6)."""
        row = self.conn.execute("SELECT patient_ids FROM predictions WHERE run_id=? AND split=?",
                                (run_id, split)).fetchone()
        if row is None or row[0] is None:
            return None
        try:
            return zlib.decompress(row[0]).decode().split("\n")
        except (TypeError, ValueError, zlib.error) as exc:
            what = f"patient ids do not decode ({type(exc).__name__})"
            raise UserError(self._damaged_predictions(run_id, split, what)) from None

    def predictions(self, run_id: int, split: str) -> tuple[list[str], np.ndarray, np.ndarray] | None:
        """(image ids, labels (N, T), probs (N, T)) stored for a run's split, or None."""
        row = self.conn.execute(
            "SELECT image_ids, labels, probs FROM predictions WHERE run_id=? AND split=?", (run_id, split)
        ).fetchone()
        if row is None:
            return None
        try:
            ids = zlib.decompress(row[0]).decode().split("\n")
            labels, probs = np.load(io.BytesIO(row[1])), np.load(io.BytesIO(row[2]))
        except (TypeError, ValueError, EOFError, OSError, zlib.error) as exc:  # UnicodeDecodeError is a ValueError
            what = f"do not decode ({type(exc).__name__}: {' '.join(str(exc).split())})"
            raise UserError(self._damaged_predictions(run_id, split, what)) from None
        if labels.shape != probs.shape or labels.ndim != 2 or len(ids) != len(labels):
            what = f"hold {len(ids)} image ids, labels {labels.shape} and probabilities {probs.shape}"
            raise UserError(self._damaged_predictions(run_id, split, what))
        return ids, labels, probs

    def _damaged_predictions(self, run_id: int, split: str, what: str) -> str:
        return (f"{self.path} is damaged: the {split} predictions of run {run_id} {what}; restore the file from a "
                f"backup, or delete run {run_id} and rerun the same `mtlbench run` command to train it again")

    def set_costs(self, run_id: int, costs: dict[str, Any]) -> None:
        """Measured costs of a run (the `costs` table's columns; mtlbench.training.loop.RunLoop.test_and_store)."""
        cols = ", ".join(costs)
        marks = ", ".join("?" for _ in costs)
        with self.transaction() as c:
            c.execute(f"INSERT OR REPLACE INTO costs (run_id, {cols}) VALUES (?, {marks})", (run_id, *costs.values()))

    def set_diagnostics(self, run_id: int, values: dict[str, float]) -> None:
        """A method's counters for a run (see Method.diagnostics)."""
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO diagnostics VALUES (?,?,?)",
                          [(run_id, k, _num(v)) for k, v in values.items()])

    # --- tuning (mtlbench tune) ---------------------------------------------------------------
    def record_trials(self, study: str, method: str, budget: int, trial_seed: int,
                      trials: Sequence[tuple[int, str, str]]) -> None:
        """The trials of `study`: (trial number, config_hash, values_json) each; kept if already recorded."""
        with self.transaction() as c:
            c.executemany(
                "INSERT OR IGNORE INTO tuning (study, method, budget, trial_seed, role, idx, config_hash, values_json)"
                " VALUES (?,?,?,?,'trial',?,?,?)",
                [(study, method, budget, trial_seed, i, h, v) for i, h, v in trials])

    def record_selection(self, study: str, trial: int, finals: Sequence[tuple[int, str]], values_json: str) -> None:
        """Mark `trial` as the one `study` selected and record its final runs, (seed, config_hash) each.

        Final runs recorded for another configuration (a selection that changed) stop being final runs;
        those of this configuration with other seeds (an earlier command's --seeds) are kept.
        """
        with self.transaction(immediate=True) as c:
            row = c.execute("SELECT method, budget, trial_seed FROM tuning WHERE study=? AND role='trial' AND idx=?",
                            (study, trial)).fetchone()
            if row is None:
                raise ValueError(f"study {study} has no trial {trial}")
            c.execute("UPDATE tuning SET selected = (idx = ?) WHERE study=? AND role='trial'", (trial, study))
            c.execute("DELETE FROM tuning WHERE study=? AND role='final' AND values_json != ?", (study, values_json))
            c.executemany(
                "INSERT OR REPLACE INTO tuning (study, method, budget, trial_seed, role, idx, config_hash, values_json,"
                " selected) VALUES (?,?,?,?,'final',?,?,?,1)",
                [(study, *row, seed, h, values_json) for seed, h in finals])

    # --- reading ----------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run a read query; rows support access by column name."""
        self.conn.row_factory = sqlite3.Row
        try:
            return self.conn.execute(sql, params).fetchall()
        finally:
            self.conn.row_factory = None

    def table_names(self) -> list[str]:
        """The data tables, in export order."""
        return ["runs", "metrics", "weights", "costs", "diagnostics", "tuning"]  # predictions are blobs: not exported


def _stored_labels(labels: np.ndarray) -> np.ndarray:
    """uint8 0/1 labels, or float32 with NaN where a dataset left labels out (kept as they are)."""
    labels = np.asarray(labels)
    return labels.astype(np.float32) if labels.dtype.kind == "f" and np.isnan(labels).any() else labels.astype(np.uint8)
