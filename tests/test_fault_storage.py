"""Fault class: the results database or a checkpoint cannot be written or read back.

Disk full (simulated), a read-only results folder, a database from a newer or older mtlbench,
a file that is not a database, a damaged checkpoint: each gives one line and a nonzero exit or
a clean restart, the database stays consistent, and a rerun finishes the sweep.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import mtlbench.checkpoint as checkpoint_mod
import mtlbench.training.loop as train_mod
from mtlbench.cli import main
from mtlbench.results.store import SCHEMA_VERSION, ResultsStore
from mtlbench.results.check import check_intact
from mtlbench.training import SilentReporter, build_model, train_run
from tests.patching import argument_reader
from tests.sweeps import smoke_sweep
from tests.tiny_model import tiny_model
from tests.configs import cpu_smoke_config

SWEEP = smoke_sweep("ew,deepchest,dwa")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("mtlbench: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _statuses(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return con.execute("SELECT method, status FROM runs ORDER BY run_id").fetchall()


@pytest.mark.slow  # a real sweep, several processes or a kill: `python -m pytest -m slow`
def test_disk_full_in_the_database_stops_with_one_line_and_a_rerun_finishes(tmp_path, capsys, monkeypatch) -> None:
    args = SWEEP + ["--results", str(tmp_path / "r.sqlite"), "--data-dir", str(tmp_path / "data")]
    real_finish = ResultsStore.finish_run

    def finish_then_fill_the_disk(self, run_id, status, **kwargs):
        real_finish(self, run_id, status, **kwargs)
        if status == "complete":  # after the first result, no page can be added to the file
            pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
            self.conn.execute(f"PRAGMA max_page_count = {pages}")

    with monkeypatch.context() as patch:
        patch.setattr(ResultsStore, "finish_run", finish_then_fill_the_disk)
        assert main(args) == 2
    err = _one_error_line(capsys)
    assert "cannot write the results database" in err and "database or disk is full" in err
    assert "free disk space and rerun the same command" in err
    statuses = _statuses(tmp_path / "r.sqlite")
    assert statuses[0] == ("ew", "complete") and all(s != "complete" for _, s in statuses[1:]), statuses
    assert main(args) == 0  # space freed: the same command finishes the sweep
    assert _statuses(tmp_path / "r.sqlite") == [("ew", "complete"), ("deepchest", "complete"), ("dwa", "complete")]


@pytest.mark.slow  # a real sweep, several processes or a kill: `python -m pytest -m slow`
def test_disk_full_while_checkpointing_leaves_no_partial_file_and_a_rerun_resumes(
    tmp_path, capsys, monkeypatch
) -> None:
    args = SWEEP + ["--epochs", "3", "--results", str(tmp_path / "r.sqlite"), "--data-dir", str(tmp_path / "data")]
    real_save = checkpoint_mod.torch.save
    calls = []

    def save_until_full(obj, f):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint of the first run: half written, then the disk is full
            f.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_mod.torch, "save", save_until_full)
        assert main(args) == 2
    err = _one_error_line(capsys)
    assert "cannot write the checkpoint" in err and "No space left on device" in err and "resumes" in err
    folder = tmp_path / "r.checkpoints"
    assert [p.name for p in folder.iterdir()] == [f"{p.stem}.pt" for p in folder.glob("*.pt")]  # no temp file
    assert len(list(folder.glob("*.pt"))) == 1  # the first checkpoint is intact
    assert _statuses(tmp_path / "r.sqlite") == [("ew", "interrupted")]
    capsys.readouterr()
    assert main(args[:-4] + ["--results", str(tmp_path / "r.sqlite"), "--data-dir", str(tmp_path / "data")]) == 0
    with ResultsStore(tmp_path / "r.sqlite") as store:
        assert [tuple(r) for r in store.query("SELECT method, status, resumes FROM runs ORDER BY run_id")] == [
            ("ew", "complete", 1),
            ("deepchest", "complete", 0),
            ("dwa", "complete", 0),
        ]


class Killed(BaseException):
    """Stands in for SIGKILL."""


class LabelReporter(SilentReporter):
    """Records each run's label and first epoch (where a resumed run starts)."""

    def __init__(self) -> None:
        self.labels: list[tuple[str, int]] = []

    def start_run(self, label, epochs, steps, first_epoch=0):
        self.labels.append((label, first_epoch))


def kill_in_second_epoch(cfg, bundle, store: ResultsStore, monkeypatch, model_factory=tiny_model) -> Path:
    """Run `cfg` until its second epoch starts, then die as SIGKILL would; returns its checkpoint."""
    real_step = train_mod.training_step
    epoch_of = argument_reader(real_step, "epoch")

    def die(*args, **kwargs):
        if epoch_of(*args, **kwargs) == 1:
            raise Killed
        return real_step(*args, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(Killed):
        patch.setattr(train_mod, "training_step", die)
        train_run(cfg, bundle, store, {}, model_factory=model_factory)
    return checkpoint_mod.checkpoint_path(store.path, cfg.config_hash())


def test_damaged_checkpoint_is_not_trusted_and_the_run_restarts(toy_bundle, tmp_path, monkeypatch) -> None:
    cfg = cpu_smoke_config(method="deepchest", epochs=2, batch_size=16)
    with ResultsStore(tmp_path / "straight.sqlite") as store:
        straight = train_run(cfg, toy_bundle, store, {})
    with ResultsStore(tmp_path / "r.sqlite") as store:
        ckpt = kill_in_second_epoch(cfg, toy_bundle, store, monkeypatch, build_model)
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # as a crash of the disk might leave it
        reporter = LabelReporter()
        again = train_run(cfg, toy_bundle, store, {}, reporter)
        assert again.status == "complete" and again.test_auroc == straight.test_auroc
        assert reporter.labels == [
            (f"deepchest seed 0 (checkpoint {ckpt.name} unreadable (RuntimeError); restarting the run)", 0)
        ]
        assert store.query("SELECT resumes FROM runs")[0]["resumes"] == 0


def test_unwritable_results_location_fails_before_any_data_work(tmp_path, capsys) -> None:
    if os.geteuid() == 0:
        results = Path("/proc/mtlbench-results/r.sqlite")  # not writable even by root
    else:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
        results = folder / "r.sqlite"
    assert main(SWEEP + ["--results", str(results), "--data-dir", str(tmp_path / "data")]) == 2
    err = _one_error_line(capsys)
    assert f"cannot write the results database {results}" in err and "writable" in err
    assert not (tmp_path / "data").exists()  # refused before generating anything


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_read_only_database_file_is_one_line(tmp_path, capsys) -> None:
    results = tmp_path / "r.sqlite"
    ResultsStore(results).close()
    results.chmod(0o400)
    assert main(SWEEP + ["--results", str(results), "--data-dir", str(tmp_path / "data")]) == 2
    assert "readonly" in _one_error_line(capsys)


def test_newer_schema_is_refused_and_older_is_migrated(tmp_path, capsys) -> None:
    newer = tmp_path / "newer.sqlite"
    ResultsStore(newer).close()
    with sqlite3.connect(newer) as con:
        con.execute("UPDATE schema_version SET version=?", (SCHEMA_VERSION + 1,))
    assert main(SWEEP + ["--results", str(newer), "--data-dir", str(tmp_path / "data")]) == 2
    assert "written by a newer mtlbench" in _one_error_line(capsys)
    assert not (tmp_path / "data").exists()
    for command in (
        ["report", "--results", str(newer), "--out", str(tmp_path / "rep")],
        ["export", "--results", str(newer), "--out", str(tmp_path / "exp")],
    ):
        assert main(command) == 2 and "newer mtlbench" in _one_error_line(capsys)
    assert not (tmp_path / "rep").exists() and not (tmp_path / "exp").exists()
    # an older database (version 1) is brought up to date and used
    older = tmp_path / "older.sqlite"
    with sqlite3.connect(older) as con:
        con.executescript(
            "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);"
        )
    assert main(SWEEP + ["--methods", "ew", "--results", str(older), "--data-dir", str(tmp_path / "data")]) == 0
    assert _statuses(older) == [("ew", "complete")]


def test_a_file_that_is_not_a_database_is_one_line(tmp_path, capsys) -> None:
    results = tmp_path / "r.sqlite"
    results.write_bytes(b"PK\x03\x04 this is a zip, not SQLite" * 200)
    assert main(SWEEP + ["--results", str(results), "--data-dir", str(tmp_path / "data")]) == 2
    assert "is not a usable mtlbench results database" in _one_error_line(capsys)
    assert results.read_bytes().startswith(b"PK\x03\x04")  # left as it was


def test_checkpoint_that_no_longer_fits_the_code_restarts_the_run(toy_bundle, tmp_path, monkeypatch) -> None:
    import torch

    cfg = cpu_smoke_config(method="dwa", epochs=2, batch_size=16)
    with ResultsStore(tmp_path / "r.sqlite") as store:
        ckpt = kill_in_second_epoch(cfg, toy_bundle, store, monkeypatch)
        payload = torch.load(ckpt, weights_only=True)
        payload["method"]["renamed_weights_"] = payload["method"].pop("weights_")  # as after a code change
        torch.save(payload, ckpt)
        reporter = LabelReporter()
        again = train_run(cfg, toy_bundle, store, {}, reporter, model_factory=tiny_model)
        assert again.status == "complete", again.detail
        assert reporter.labels == [
            (f"dwa seed 0 (checkpoint {ckpt.name} does not fit this version (RuntimeError); restarting the run)", 0)
        ]
    with ResultsStore(tmp_path / "straight.sqlite") as store:
        assert train_run(cfg, toy_bundle, store, {}, model_factory=tiny_model).test_auroc == again.test_auroc


def test_a_checkpoint_left_from_another_database_is_deleted_before_a_new_run(toy_bundle, tmp_path, monkeypatch) -> None:
    cfg = cpu_smoke_config(method="ew", epochs=1, batch_size=16)
    path = tmp_path / "r.sqlite"
    ckpt = checkpoint_mod.checkpoint_path(path, cfg.config_hash())
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"a checkpoint of run 1 of a database since deleted")
    seen = []
    real_step = train_mod.training_step

    def look(*args, **kwargs):
        seen.append(ckpt.exists())
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "training_step", look)
    with ResultsStore(path) as store:
        assert train_run(cfg, toy_bundle, store, {}, model_factory=tiny_model).status == "complete"
    assert seen and not any(seen)


def test_torch_load_places_cuda_storages_on_the_run_device_and_keeps_cpu_ones() -> None:
    import torch

    place = checkpoint_mod.placement(torch.device("cpu"))
    storage = torch.arange(3.0).untyped_storage()
    assert place(storage, "cuda:0").device.type == "cpu"  # what a CUDA checkpoint's tensors go through
    assert place(storage, "cpu") is storage


# ----------------------------------------------------------------------------- a damaged database

ONE_RUN = smoke_sweep("ew", epochs=1)[1:]  # without the leading "run"


@pytest.fixture(scope="module")
def one_run_db(tmp_path_factory) -> tuple[Path, Path]:
    """(database, data folder) of a real one-run sweep (ew seed 0); tests damage copies of the database."""
    root = tmp_path_factory.mktemp("intact")
    assert main(["run", *ONE_RUN, "--results", str(root / "r.sqlite"), "--data-dir", str(root / "data")]) == 0
    return root / "r.sqlite", root / "data"


def _duplicate_the_complete_run(con: sqlite3.Connection) -> None:
    columns = [r[1] for r in con.execute("PRAGMA table_info(runs)") if r[1] != "run_id"]
    con.execute(f"INSERT INTO runs ({', '.join(columns)}) SELECT {', '.join(columns)} FROM runs WHERE run_id=1")
    con.execute(
        "INSERT INTO metrics SELECT 2, split, epoch, task, loss, accuracy, auroc, ap FROM metrics WHERE run_id=1"
    )


# damage → (how it is done, what the line must say)
DAMAGE = {
    "text-in-real-column": (
        "UPDATE metrics SET auroc='n/a' WHERE split='test' AND task='Hernia'",
        "metrics.auroc holds text 'n/a' where a finite number belongs",
    ),
    "non-finite-metric": (
        "UPDATE metrics SET auroc=9e999 WHERE split='test' AND task='Hernia'",
        "metrics.auroc holds the value inf where a finite number belongs",
    ),
    "invalid-config-json": (
        """UPDATE runs SET config_json='{"method": "ew", '""",
        "the config_json of run 1 (ew seed 0) is not valid JSON (",
    ),
    "duplicate-complete-row": (_duplicate_the_complete_run, "the cell ew seed 0 (config "),
    "unparsable-schema-version": (
        "UPDATE schema_version SET version='three'",
        "its schema_version holds 'three', not a version number",
    ),
    "dropped-table": ("DROP TABLE weights", "its table 'weights' is missing"),
    "dropped-column": ("ALTER TABLE costs DROP COLUMN peak_rss_mb", "its table 'costs' lacks column(s) peak_rss_mb"),
    "complete-run-without-metrics": (
        "DELETE FROM metrics WHERE run_id=1",
        "run 1 (ew seed 0) is stored as complete but its metrics are missing",
    ),
}


def _damaged_copy(one_run_db, tmp_path: Path, damage: str) -> Path:
    db = tmp_path / "r.sqlite"
    with sqlite3.connect(one_run_db[0]) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    how = DAMAGE[damage][0]
    with sqlite3.connect(db) as con:
        how(con) if callable(how) else con.execute(how)
    return db


def _dump(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return list(con.iterdump())


@pytest.mark.parametrize("command", ["run", "report", "export"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_database_is_one_line_naming_it_and_the_damage(
    damage: str, command: str, one_run_db, tmp_path: Path, capsys
) -> None:
    db = _damaged_copy(one_run_db, tmp_path, damage)
    before = _dump(db)
    argv = {
        "run": ["run", *ONE_RUN, "--data-dir", str(one_run_db[1])],
        "report": ["report", "--quiet", "--resamples", "100", "--out", str(tmp_path / "out")],
        "export": ["export", "--out", str(tmp_path / "out")],
    }[command] + ["--results", str(db)]
    capsys.readouterr()
    code = main(argv)
    if damage == "complete-run-without-metrics" and command == "run":  # not a result: trained again, and said
        out = capsys.readouterr().out
        assert code == 0 and "ew seed 0: stored as complete but its metrics are missing: trained again" in out
        with ResultsStore(db) as store:
            check_intact(store)  # whole again
            assert [
                tuple(r)
                for r in store.query(
                    "SELECT status, (SELECT COUNT(*) FROM metrics m WHERE m.run_id=runs.run_id AND split='test')"
                    " FROM runs"
                )
            ] == [("complete", 14)]
        return
    assert code == 2
    line = _one_error_line(capsys)
    assert f"{db} is damaged: " in line and DAMAGE[damage][1] in line, line
    assert not (tmp_path / "out").exists()
    assert _dump(db) == before  # nothing written, nothing repaired behind the user's back


def test_report_never_marks_a_non_finite_value_best() -> None:
    from mtlbench.report.leaderboard import significantly_best

    resampled = np.linspace(0.6, 0.8, 200)
    # an infinite or NaN value (a damaged database) is never best, even against a single finite one
    assert (
        significantly_best(
            {"ew": (0.7, resampled), "dwa": (float("inf"), resampled), "famo": (float("nan"), resampled)}, True
        )
        is None
    )
    assert significantly_best({"ew": (0.7, resampled), "dwa": (float("-inf"), resampled)}, False) is None


@pytest.mark.parametrize("column, value", [("image_ids", b"not zlib"), ("probs", b"\x93NUMPY garbage")])
def test_predictions_that_do_not_decode_are_one_line_in_report(
    column: str, value: bytes, one_run_db, tmp_path: Path, capsys
) -> None:
    db = _damaged_copy(one_run_db, tmp_path, "text-in-real-column")
    with sqlite3.connect(db) as con:
        con.execute("UPDATE metrics SET auroc=NULL WHERE auroc='n/a'")  # only the predictions are damaged
        con.execute(f"UPDATE predictions SET {column}=? WHERE split='test'", (value,))
    capsys.readouterr()
    assert main(["report", "--quiet", "--resamples", "100", "--out", str(tmp_path / "out"), "--results", str(db)]) == 2
    assert f"{db} is damaged: the test predictions of run 1 do not decode (" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()
