"""The results database's schema, its version, and the migrations of older databases."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import fields
from pathlib import Path

from mtlbench.config import LEGACY_VALUES, RunConfig
from mtlbench.errors import UserError

# 2: predictions table; 3: run claims (owner, heartbeat) and resume counts; 4: a run's identity
# (config_hash) and stored config hold its method's resolved hyperparameters and version;
# 5: runs stored as `famo` before it ran the authors' same-batch update are `famo-nextbatch`;
# 6: predictions hold each image's patient id (NULL in rows stored before); 7: the tuning table
# (`mtlbench tune`: which cells are trials, the configuration selected per method, its final runs;
# older databases gain it empty); 8: costs hold the median step's process CPU time, the other
# processes' load while the run trained, and whether that load makes its timings unreliable (NULL
# in rows stored before: unknown); 9: the cross_tests table (`--test-dataset`: the selected model's
# metrics on another dataset's test split; older databases gain it empty)
SCHEMA_VERSION = 9
# Methods whose name changed meaning: {schema that introduced the change: {old name: new name}}.
RENAMED_METHODS = {5: {"famo": "famo-nextbatch"}}
# Hyperparameter defaults changed after schema 4, at the value they had up to schema 4: a run
# stored before schema 4 holds only its --param overrides, so a field it lacks ran with this
# value, not today's default. {method: {name: default before schema 4}}. Add the old value of
# every default that changes, once (a second change of the same default keeps the first value).
DEFAULTS_BEFORE_SCHEMA_4: dict[str, dict[str, object]] = {
    "mgda": {"normalization": "none"},  # "loss+" since issue 17 (the authors' CelebA config)
    "mgda-ub": {"normalization": "none"},
}
STATUSES = ("running", "complete", "diverged", "failed", "interrupted", "oom")
# A run in one of these statuses is a result: a rerun skips it (--force reruns it). The others
# (failed, interrupted, or running in a process that died) are taken over and resumed.
FINAL_STATUSES = ("complete", "diverged", "oom")
# True for a row of `runs` stored as complete whose metrics are not all there (rows deleted by
# hand, or a tampered status): fewer test rows than the run has tasks, or no validation row. It is
# not a result: `run` trains the cell again, `report` and `export` refuse the database.
HOLLOW_RUN_SQL = (
    "(runs.status = 'complete' AND ("
    "(SELECT COUNT(*) FROM metrics m WHERE m.run_id = runs.run_id AND m.split = 'test')"
    " < MAX(1, (SELECT COUNT(DISTINCT m.task) FROM metrics m WHERE m.run_id = runs.run_id))"
    " OR NOT EXISTS (SELECT 1 FROM metrics m WHERE m.run_id = runs.run_id AND m.split = 'val')))"
)
HOLLOW_NOTE = "stored as complete but its metrics are missing: trained again"

SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    method TEXT NOT NULL,
    dataset TEXT NOT NULL,
    seed INTEGER NOT NULL,
    config_hash TEXT NOT NULL,
    config_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running','complete','diverged','failed','interrupted','oom')),
    started_at TEXT NOT NULL,
    ended_at TEXT,
    env_json TEXT,
    data_json TEXT,
    weight_normalization TEXT,
    selected_epoch INTEGER,
    diverged_step INTEGER,
    error TEXT,
    owner_host TEXT,  -- the process running it now: host and pid (see claims.py)
    owner_pid INTEGER,
    owner_token TEXT,  -- random per process: tells processes with the same host and pid apart
    heartbeat_at REAL,  -- unix time of the owner's last sign of life
    resumes INTEGER NOT NULL DEFAULT 0  -- times it continued from a checkpoint after an interruption
);
CREATE INDEX IF NOT EXISTS runs_by_hash ON runs (config_hash, status);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    split TEXT NOT NULL CHECK (split IN ('train','val','test')),
    epoch INTEGER NOT NULL,
    task TEXT NOT NULL,
    loss REAL, accuracy REAL, auroc REAL, ap REAL,
    PRIMARY KEY (run_id, split, epoch, task)
);
CREATE TABLE IF NOT EXISTS cross_tests (
    run_id INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    dataset TEXT NOT NULL,  -- the other dataset (--test-dataset), its own test split
    task TEXT NOT NULL,
    images INTEGER NOT NULL,  -- test images with a label for the task there
    positives INTEGER NOT NULL,
    loss REAL, accuracy REAL, auroc REAL, ap REAL,
    PRIMARY KEY (run_id, dataset, task)
);
CREATE TABLE IF NOT EXISTS weights (
    run_id INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    step INTEGER NOT NULL,  -- -1: the weights in force for the whole epoch
    task TEXT NOT NULL,
    weight REAL NOT NULL,
    PRIMARY KEY (run_id, epoch, step, task)
);
CREATE TABLE IF NOT EXISTS diagnostics (
    run_id INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS predictions (
    run_id INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    split TEXT NOT NULL CHECK (split IN ('val','test')),
    epoch INTEGER NOT NULL,  -- the selected epoch
    image_ids BLOB NOT NULL,  -- zlib of the newline-joined image ids, in row order
    labels BLOB NOT NULL,  -- .npy bytes, (N, T) uint8 (float32 with NaN where labels are missing)
    probs BLOB NOT NULL,  -- .npy bytes, (N, T) float32, P(finding present)
    patient_ids BLOB,  -- zlib of the newline-joined patient ids, in row order (NULL before schema 6)
    PRIMARY KEY (run_id, split)
);
CREATE TABLE IF NOT EXISTS costs (
    run_id INTEGER PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    device TEXT NOT NULL,
    wall_s REAL, train_s REAL, eval_s REAL,
    median_step_s REAL, median_method_s REAL, images_per_s REAL,
    peak_cuda_mb REAL,
    peak_rss_mb REAL,
    rss_scope TEXT,  -- 'run' (peak reset at run start) or 'process' (high-water mark so far)
    median_step_cpu_s REAL,  -- process CPU time (user + system, all threads) of the median step
    other_load REAL,  -- share of the run's CPUs other processes used while it trained (/proc/stat)
    unreliable INTEGER,  -- 1: the time columns are not compared (other load ≥ machine_load.LOADED_SHARE),
                         -- 0: they are, NULL: unknown (not measurable, or stored before schema 8)
    unreliable_reason TEXT  -- why unreliable or unknown, in words
);
CREATE TABLE IF NOT EXISTS tuning (
    study TEXT NOT NULL,  -- one method's search: protocol, method and version, space, budget, trial seed (a hash)
    method TEXT NOT NULL,
    budget INTEGER NOT NULL,  -- --trials: the trials every method of the study's protocol is given
    trial_seed INTEGER NOT NULL,  -- the seed every trial trains with (and draws the trials' order)
    role TEXT NOT NULL CHECK (role IN ('trial','final')),
    idx INTEGER NOT NULL,  -- a trial's number (role trial) or a final run's seed (role final)
    config_hash TEXT NOT NULL,  -- the cell (runs.config_hash): linked by identity, not run_id
    values_json TEXT NOT NULL,  -- the searched settings: {"config": {...}, "method_params": {...}}
    selected INTEGER NOT NULL DEFAULT 0 CHECK (selected IN (0, 1)),  -- 1: the trial chosen on validation
    PRIMARY KEY (study, role, idx)
);
CREATE INDEX IF NOT EXISTS tuning_by_hash ON tuning (config_hash);
"""


# columns added to `runs` after version 2, added to older databases on open
RUN_COLUMNS_V3 = (
    ("owner_host", "TEXT"),
    ("owner_pid", "INTEGER"),
    ("owner_token", "TEXT"),
    ("heartbeat_at", "REAL"),
    ("resumes", "INTEGER NOT NULL DEFAULT 0"),
)
# Columns added to a table after it was created: (table, column, declaration). A migration adds
# each one an older database lacks (CREATE TABLE IF NOT EXISTS leaves existing tables alone).
COST_COLUMNS_V7 = (
    ("median_step_cpu_s", "REAL"),
    ("other_load", "REAL"),
    ("unreliable", "INTEGER"),
    ("unreliable_reason", "TEXT"),
)
ADDED_COLUMNS = (*(("runs", name, decl) for name, decl in RUN_COLUMNS_V3), ("predictions", "patient_ids", "BLOB"),
                 *(("costs", name, decl) for name, decl in COST_COLUMNS_V7))



def read_version(conn: sqlite3.Connection, path: Path) -> int | None:
    """The database's schema version (None for a new file); a damaged version is a UserError."""
    if not conn.execute("SELECT name FROM sqlite_master WHERE name='schema_version'").fetchone():
        return None
    values = [r[0] for r in conn.execute("SELECT version FROM schema_version")]
    bad = [v for v in values if not isinstance(v, int) or v < 1]
    if bad:
        raise UserError(
            f"{path} is damaged: its schema_version holds {bad[0]!r}, not a version number; "
            "restore the file from a backup or pass --results PATH for a new database"
        )
    return max(values) if values else None

def init_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create or migrate the schema under the write lock (several processes may open it at once)."""
    version = read_version(conn, path)
    refuse_newer(version, path)
    journal = "delete" if network_filesystem(path) else "wal"
    if version == SCHEMA_VERSION and journal_mode(conn) == journal:
        return  # nothing to write: a read-only user (report, export) works too
    # WAL: readers never block the writer, one writer at a time; it needs shared memory between the processes,
    # which a network filesystem does not give (SQLite's documentation: wal.html), so there the rollback journal.
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = read_version(conn, path)  # again, under the lock: another process may have migrated it
        refuse_newer(version, path)
        if version != SCHEMA_VERSION:
            for statement in SCHEMA.split(";"):  # one by one: executescript would commit first
                if statement.strip():
                    conn.execute(statement)
            for table, name, decl in ADDED_COLUMNS:
                if name not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
            if version is not None and version < SCHEMA_VERSION:
                renamed = rename_methods(conn, version)
                # Before schema 4 every run needs its identity recomputed; after it, only the
                # renamed ones (the others keep the method version they were stored with).
                reidentify_runs(conn, None if version < 4 else renamed)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise

def rename_methods(conn: sqlite3.Connection, version: int) -> set[int]:
    """Give runs stored under a name whose meaning changed after schema `version` the name of
    what they ran (e.g. `famo` before schema 5 was the next-batch approximation, bit for bit
    what `famo-nextbatch` computes now), so they are neither lost nor taken for the new method.
    Returns the ids of the renamed runs."""
    renamed: set[int] = set()
    for since, renames in RENAMED_METHODS.items():
        if version >= since:
            continue
        for old, new in renames.items():
            rows = conn.execute("SELECT run_id, config_json FROM runs WHERE method=?", (old,)).fetchall()
            for run_id, text in rows:
                try:
                    stored = {**json.loads(text), "method": new}
                except (TypeError, ValueError, AttributeError):
                    continue  # left for the damage check (mtlbench.results.check)
                conn.execute("UPDATE runs SET method=?, config_json=? WHERE run_id=?",
                                  (new, json.dumps(stored, sort_keys=True), run_id))
                renamed.add(run_id)
    return renamed

def reidentify_runs(conn: sqlite3.Connection, run_ids: set[int] | None = None) -> None:
    """Migration to schema 4: each stored run's identity (or only those of `run_ids`)
    recomputed from its stored settings, its method's hyperparameters resolved with the defaults
    of schema 4 (today's, but those changed since: DEFAULTS_BEFORE_SCHEMA_4) and today's version.
    Right for runs stored before schema 4: no default or version changed before it (checked in
    the git history) except famo's, whose old runs are renamed to famo-nextbatch first. So a run
    stored with the defaults of its time is the cell a rerun with those values asks for, an
    explicit default and an implicit one become one cell, and a default changed later is a new
    cell. A run stored at schema 4 or later holds its resolved hyperparameters, which the old
    defaults leave alone. A stored config that cannot be read is left for the damage check
    (mtlbench.results.check) to report."""
    known = {f.name for f in fields(RunConfig)}
    complete: dict[str, int] = {}  # new identity → the complete run that holds it
    rows = conn.execute("SELECT run_id, config_json, status FROM runs ORDER BY run_id").fetchall()
    for run_id, text, status in rows:
        if run_ids is not None and run_id not in run_ids:
            continue
        try:
            stored = json.loads(text)
            old_defaults = DEFAULTS_BEFORE_SCHEMA_4.get(stored.get("method"), {})
            stored = {**stored, "method_params": {**old_defaults, **(stored.get("method_params") or {})}}
            config = RunConfig(**{**LEGACY_VALUES, **{k: v for k, v in stored.items() if k in known}})
            config_hash, config_json = config.config_hash(), config.to_json()
        except (TypeError, ValueError, AttributeError):
            continue
        if status == "complete" and config_hash in complete:
            # e.g. `--param cagrad.c=0.4` and no --param: two cells before, one now. The later
            # run is kept for the record under its old identity, out of every result.
            conn.execute(
                "UPDATE runs SET status='failed', config_json=?, error=? WHERE run_id=?",
                (config_json, f"superseded: the same cell as run {complete[config_hash]} once its hyperparameters "
                              "are resolved (results database schema 4); kept for the record", run_id))
            continue
        if status == "complete":
            complete[config_hash] = run_id
        conn.execute("UPDATE runs SET config_hash=?, config_json=? WHERE run_id=?",
                          (config_hash, config_json, run_id))

def refuse_newer(version: int | None, path: Path) -> None:
    """A database written by a newer mtlbench is refused, in one line."""
    if version is not None and version > SCHEMA_VERSION:
        raise UserError(
            f"{path} was written by a newer mtlbench (schema {version} > {SCHEMA_VERSION}); "
            "upgrade mtlbench or pass --results PATH for a new database"
        )


def journal_mode(conn: sqlite3.Connection) -> str:
    """The database's journal mode, lower case (wal, delete, …)."""
    return conn.execute("PRAGMA journal_mode").fetchone()[0].lower()


# filesystem types (as /proc/mounts names them) where SQLite's WAL mode must not be used: its shared-memory
# index cannot be shared between hosts
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "ceph", "fuse.sshfs",
                       "glusterfs", "fuse.glusterfs", "panfs", "wekafs", "9p")


def network_filesystem(path: Path, mounts: str | None = None) -> str | None:
    """The type of the network filesystem that `path` (or the folder it would be made in) lies on, else None:
    from the longest mount point of /proc/mounts (`mounts`: its text, for tests) above the path."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None  # not Linux: no way to tell; WAL as before
    target = Path(path).expanduser().absolute()
    existing = next((p for p in (target, *target.parents) if p.exists()), None)
    if existing is not None:  # through symlinks (e.g. /shared → an NFS mount), to the real place
        target = existing.resolve() / target.relative_to(existing)
    best, kind = "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = str(target) == point or str(target).startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # the later of two mounts on one point (autofs, then nfs) is it
            best, kind = point, fields[2].lower()
    return kind if kind in NETWORK_FILESYSTEMS else None
