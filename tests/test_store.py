"""The SQLite results store: round trip, skip on rerun, --force, schema version."""

import dataclasses
import json
import sqlite3
from dataclasses import replace

import numpy as np
import pytest

from mtlbench.results.leases import Owner
from mtlbench.config import LEGACY_VALUES, RunConfig, build_config
from mtlbench.errors import UserError
from mtlbench.task_metrics import TaskMetrics
from mtlbench.methods.params import FAMOParams
from mtlbench.results.store import SCHEMA, SCHEMA_VERSION, ResultsStore, RunKey
from mtlbench.training import train_run
from tests.tiny_model import tiny_model
from tests.configs import cpu_smoke_config

TASKS = ("a", "b")


def complete_run(store: ResultsStore, key: RunKey) -> int | None:
    """The id of the latest complete run of the cell `key`, if any."""
    rows = store.query(
        "SELECT run_id FROM runs WHERE config_hash=? AND status='complete' ORDER BY run_id DESC LIMIT 1",
        (key.config_hash,),
    )
    return rows[0][0] if rows else None


KEY = RunKey("ew", "toy", 0, "abc123")


def test_round_trip(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as s:
        rid = s.claim_run(KEY, '{"x": 1}', {"torch": "t"}, "sum-to-T", Owner()).run_id
        m = TaskMetrics(np.array([0.5, 0.25]), np.array([0.9, 0.8]), np.array([0.7, np.nan]), np.array([0.6, 0.4]))
        s.add_metrics(rid, "test", 3, TASKS, m)
        s.add_weights(rid, 0, [-1], TASKS, np.array([[1.0, 2.0]]))
        s.set_costs(rid, {"device": "cpu", "wall_s": 1.5, "peak_rss_mb": 10.0, "rss_scope": "run"})
        s.finish_run(rid, "complete", selected_epoch=3)
    with ResultsStore(path) as s:  # reopened: everything is there
        rows = s.query("SELECT task, loss, accuracy, auroc, ap FROM metrics ORDER BY task")
        assert [tuple(r) for r in rows] == [("a", 0.5, 0.9, 0.7, 0.6), ("b", 0.25, 0.8, None, 0.4)]
        assert [tuple(r) for r in s.query("SELECT task, weight FROM weights ORDER BY task")] == [("a", 1.0), ("b", 2.0)]
        assert complete_run(s, KEY) == rid
        run = s.query("SELECT status, selected_epoch, config_json FROM runs")[0]
        assert tuple(run) == ("complete", 3, '{"x": 1}')


def test_unfinished_attempt_is_taken_over_and_restarted_clean(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as s:
        me = Owner()
        first = s.claim_run(KEY, "{}", {}, "sum-to-T", me).run_id
        s.add_weights(first, 0, [-1], TASKS, np.ones((1, 2)))
        assert complete_run(s, KEY) is None
        assert s.claim_run(KEY, "{}", {}, "sum-to-T", Owner()).action == "busy"  # another live owner
        again = s.claim_run(KEY, "{}", {}, "sum-to-T", me)  # this owner's earlier attempt
        assert (again.run_id, again.taken_over) == (first, True)
        s.restart_run(first)  # no checkpoint: what the attempt wrote goes
        assert [r["run_id"] for r in s.query("SELECT run_id FROM runs")] == [first]
        assert s.query("SELECT COUNT(*) AS n FROM weights")[0]["n"] == 0


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultsStore(path).close()
    with sqlite3.connect(path) as c:
        c.execute("UPDATE schema_version SET version=?", (SCHEMA_VERSION + 1,))
    with pytest.raises(UserError, match="newer mtlbench"):
        ResultsStore(path)


def test_not_a_database_is_a_user_error(tmp_path):
    path = tmp_path / "r.sqlite"
    path.write_text("this is not sqlite" * 100)
    with pytest.raises(UserError, match="not a usable"):
        ResultsStore(path)


def test_skip_on_rerun_and_force(tmp_path, toy_bundle):
    # grad_engine and precision given explicitly: train_run records the resolved values, and so their hash
    cfg = cpu_smoke_config(epochs=1, batch_size=32)
    with ResultsStore(tmp_path / "r.sqlite") as s:
        first = train_run(cfg, toy_bundle, s, {}, model_factory=tiny_model)
        again = train_run(cfg, toy_bundle, s, {}, model_factory=tiny_model)
        assert again.status == "skipped" and again.run_id == first.run_id
        other_seed = train_run(replace(cfg, seed=1), toy_bundle, s, {}, model_factory=tiny_model)
        assert other_seed.status == "complete" and other_seed.run_id != first.run_id
        forced = train_run(cfg, toy_bundle, s, {}, force=True, model_factory=tiny_model)
        assert forced.status == "complete" and forced.run_id != first.run_id
        runs = s.query("SELECT run_id FROM runs WHERE config_hash=?", (cfg.config_hash(),))
        assert [r["run_id"] for r in runs] == [forced.run_id]


def test_predictions_round_trip_and_cascade(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as s:
        rid = s.claim_run(KEY, "{}", {}, "sum-to-T", Owner()).run_id
        probs = np.array([[0.1, 0.9], [0.7, 0.2], [0.5, 0.5]], dtype=np.float32)
        labels = np.array([[0, 1], [1, 0], [0, 0]], dtype=np.uint8)
        s.add_predictions(rid, "test", 2, ["x.png", "y.png", "z.png"], labels, probs, ["p1", "p1", "p2"])
        ids, got_labels, got_probs = s.predictions(rid, "test")
        assert ids == ["x.png", "y.png", "z.png"] and s.patient_ids(rid, "test") == ["p1", "p1", "p2"]
        assert np.array_equal(got_labels, labels) and np.array_equal(got_probs, probs)
        assert s.predictions(rid, "val") is None
        s.finish_run(rid, "complete")
        assert s.claim_run(KEY, "{}", {}, "sum-to-T", Owner(), force=True).run_id != rid  # --force
        assert s.query("SELECT COUNT(*) AS n FROM predictions")[0]["n"] == 0


def test_version_1_database_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript("CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);")
    con.commit()
    con.close()
    with ResultsStore(path) as s:
        assert s.query("SELECT version FROM schema_version")[0]["version"] == SCHEMA_VERSION == 9
        assert s.query("SELECT COUNT(*) AS n FROM predictions")[0]["n"] == 0


def _as_older_schema(path, version: int, *statements: str) -> None:
    """Rewrite the database at `path` as schema `version` stored it: run `statements`, set the version."""
    with sqlite3.connect(path) as con:
        for statement in statements:
            con.execute(statement)
        con.execute("UPDATE schema_version SET version = ?", (version,))
    con.close()


def test_version_5_predictions_gain_an_empty_patient_column(tmp_path):
    path = tmp_path / "v5.sqlite"
    with ResultsStore(path) as s:
        rid = s.claim_run(KEY, "{}", {}, "sum-to-T", Owner()).run_id
        s.add_predictions(rid, "test", 0, ["a.png"], np.zeros((1, 2)), np.zeros((1, 2)), ["p"])
    _as_older_schema(path, 5, "ALTER TABLE predictions DROP COLUMN patient_ids")  # no patient column
    with ResultsStore(path) as s:
        assert s.query("SELECT version FROM schema_version")[0]["version"] == SCHEMA_VERSION
        assert s.predictions(rid, "test")[0] == ["a.png"] and s.patient_ids(rid, "test") is None


def test_version_6_database_gains_an_empty_tuning_table_and_keeps_its_runs(tmp_path):
    path = tmp_path / "v6.sqlite"
    with ResultsStore(path) as s:
        rid = s.claim_run(KEY, "{}", {}, "sum-to-T", Owner()).run_id
    _as_older_schema(path, 6, "DROP TABLE tuning")  # no tuning table
    with ResultsStore(path) as s:
        assert s.query("SELECT version FROM schema_version")[0]["version"] == SCHEMA_VERSION
        assert s.query("SELECT COUNT(*) AS n FROM tuning")[0]["n"] == 0
        assert [r["run_id"] for r in s.query("SELECT run_id FROM runs")] == [rid]


def test_version_8_database_gains_an_empty_cross_tests_table_and_keeps_its_runs(tmp_path):
    path = tmp_path / "v8.sqlite"
    with ResultsStore(path) as s:
        rid = s.claim_run(KEY, "{}", {}, "sum-to-T", Owner()).run_id
    _as_older_schema(path, 8, "DROP TABLE cross_tests")  # before --test-dataset
    with ResultsStore(path) as s:
        assert s.query("SELECT version FROM schema_version")[0]["version"] == SCHEMA_VERSION == 9
        assert s.query("SELECT COUNT(*) AS n FROM cross_tests")[0]["n"] == 0
        assert [r["run_id"] for r in s.query("SELECT run_id FROM runs")] == [rid]


def test_version_7_costs_gain_load_columns_that_say_unknown(tmp_path):
    """Schema 8 adds the median step's CPU time, the other load and the reliability flag to `costs`;
    a run stored before keeps its costs, its new columns NULL: reliability unknown."""
    path = tmp_path / "v7.sqlite"
    with ResultsStore(path) as s:
        rid = s.claim_run(KEY, "{}", {}, "sum-to-T", Owner()).run_id
        s.set_costs(
            rid, {"device": "cpu", "wall_s": 3.0, "median_step_s": 0.12, "peak_rss_mb": 10.0, "rss_scope": "run"}
        )
        s.finish_run(rid, "complete")
    _as_older_schema(
        path,
        7,
        *(
            f"ALTER TABLE costs DROP COLUMN {column}"  # no load columns
            for column in ("median_step_cpu_s", "other_load", "unreliable", "unreliable_reason")
        ),
    )
    with ResultsStore(path) as s:
        assert s.query("SELECT version FROM schema_version")[0]["version"] == SCHEMA_VERSION == 9
        row = dict(s.query("SELECT * FROM costs WHERE run_id=?", (rid,))[0])
        assert (row["wall_s"], row["median_step_s"], row["peak_rss_mb"]) == (3.0, 0.12, 10.0)
        assert [row[c] for c in ("median_step_cpu_s", "other_load", "unreliable", "unreliable_reason")] == [None] * 4
        s.set_costs(
            rid,
            {
                "device": "cpu",
                "median_step_s": 0.1,
                "other_load": 0.4,
                "unreliable": True,
                "unreliable_reason": "loaded",
            },
        )  # and the new columns take values
        assert s.query("SELECT unreliable FROM costs")[0]["unreliable"] == 1


def test_version_2_database_gains_claim_columns_and_keeps_its_runs(tmp_path):
    path = tmp_path / "v2.sqlite"
    v2_schema = SCHEMA
    for line in (
        "    owner_host TEXT,  -- the process running it now: host and pid (see claims.py)\n",
        "    owner_pid INTEGER,\n",
        "    heartbeat_at REAL,  -- unix time of the owner's last sign of life\n",
    ):
        assert line in v2_schema
        v2_schema = v2_schema.replace(line, "")
    v2_schema = v2_schema.replace(
        "    error TEXT,\n    resumes INTEGER NOT NULL DEFAULT 0  -- times it continued from a checkpoint after an interruption\n",
        "    error TEXT\n",
    )
    con = sqlite3.connect(path)
    con.executescript(
        v2_schema + "INSERT INTO schema_version VALUES (2);"
        "INSERT INTO runs (method, dataset, seed, config_hash, config_json, status, started_at)"
        " VALUES ('ew', 'toy', 0, 'abc123', '{}', 'complete', 'then');"
    )
    con.commit()
    assert "owner_pid" not in {r[1] for r in con.execute("PRAGMA table_info(runs)")}
    con.close()
    with ResultsStore(path) as s:
        assert s.query("SELECT version FROM schema_version")[0]["version"] == SCHEMA_VERSION
        assert {"owner_host", "owner_pid", "heartbeat_at", "resumes"} <= {
            r[1] for r in s.query("PRAGMA table_info(runs)")
        }
        # the old run is re-identified from its stored settings (here: all defaults), not lost
        assert complete_run(s, replace(KEY, config_hash=RunConfig(**LEGACY_VALUES).config_hash())) == 1
        assert s.query("PRAGMA journal_mode")[0][0] == "wal"


def _schema_3_database(path, configs: list[tuple[str, dict]]) -> None:
    """A results database as mtlbench wrote it before schema 4: each (status, config) stored with
    the config's method_params holding only the --param overrides, hashed by the old scheme."""
    with ResultsStore(path) as s:
        for i, (status, config) in enumerate(configs):
            rid = s.claim_run(
                RunKey(config["method"], config["dataset"], config["seed"], f"old{i}"),
                json.dumps(config),
                {},
                "none",
                Owner(),
                force=True,
            ).run_id
            s.finish_run(rid, status)
    with sqlite3.connect(path) as con:
        con.execute("UPDATE schema_version SET version=3")


def test_schema_3_runs_are_reidentified_with_resolved_hyperparameters(tmp_path):
    """`--param cagrad.c=0.4` (the default) and no --param were two cells before schema 4: they
    become one; the later duplicate is kept for the record as superseded, never counted twice."""
    base = cpu_smoke_config(method="cagrad")
    old = {**dataclasses.asdict(base)}
    explicit = {**old, "method_params": {"c": 0.4}}
    other = {**old, "method_params": {"c": 0.5}}
    path = tmp_path / "v3.sqlite"
    _schema_3_database(path, [("complete", old), ("complete", explicit), ("complete", other)])
    with ResultsStore(path) as s:
        rows = s.query("SELECT run_id, status, config_hash, config_json, error FROM runs ORDER BY run_id")
        assert [r["status"] for r in rows] == ["complete", "failed", "complete"]
        assert rows[0]["config_hash"] == base.config_hash() == replace(base, method_params={"c": 0.4}).config_hash()
        assert rows[2]["config_hash"] == replace(base, method_params={"c": 0.5}).config_hash() != base.config_hash()
        assert "superseded: the same cell as run 1" in rows[1]["error"]
        stored = json.loads(rows[0]["config_json"])
        assert stored["method_params"] == {"c": 0.4, "rescale": "1+c^2"} and stored["method_version"] == 1
        assert complete_run(s, RunKey("cagrad", base.dataset, base.seed, base.config_hash())) == rows[0]["run_id"]


@pytest.mark.parametrize("method", ["mgda", "mgda-ub"])
def test_schema_3_runs_keep_the_defaults_of_their_time(tmp_path, method):
    """An mgda run stored before schema 4 with no --param ran with normalization "none", the
    default then: it becomes that cell, never the cell of today's default "loss+" (issue 17)."""
    base = cpu_smoke_config(method=method)
    old = {**dataclasses.asdict(base), "method_params": {}}
    l2 = {**old, "method_params": {"normalization": "l2"}}
    path = tmp_path / "v3.sqlite"
    _schema_3_database(path, [("complete", old), ("complete", l2)])
    none = replace(base, method_params={"normalization": "none"})
    with ResultsStore(path) as s:
        rows = s.query("SELECT run_id, status, config_hash, config_json FROM runs ORDER BY run_id")
        assert [r["status"] for r in rows] == ["complete", "complete"]
        assert rows[0]["config_hash"] == none.config_hash() != base.config_hash()
        assert json.loads(rows[0]["config_json"])["method_params"] == {"normalization": "none"}
        assert rows[1]["config_hash"] == replace(base, method_params={"normalization": "l2"}).config_hash()
        assert complete_run(s, RunKey(method, base.dataset, base.seed, base.config_hash())) is None
        assert complete_run(s, RunKey(method, base.dataset, base.seed, none.config_hash())) == rows[0]["run_id"]


@pytest.mark.parametrize("old_schema", [3, 4])
def test_famo_runs_stored_before_schema_5_become_famo_nextbatch(tmp_path, old_schema):
    """Before schema 5 `famo` meant the next-batch approximation, which `famo-nextbatch` now computes
    bit for bit: its stored runs are that method's cell (a rerun of famo-nextbatch skips them), and
    `famo` (the authors' same-batch update, version 2) is a new cell, never their results."""
    base = cpu_smoke_config(method="famo")
    old = {**dataclasses.asdict(base), "method_params": {}}
    if old_schema == 4:
        old = {**old, "method_params": dataclasses.asdict(FAMOParams()), "method_version": 1}
    path = tmp_path / "old.sqlite"
    _schema_3_database(path, [("complete", old)])
    with sqlite3.connect(path) as con:
        con.execute("UPDATE schema_version SET version=?", (old_schema,))
    with ResultsStore(path) as s:
        (row,) = s.query("SELECT run_id, method, status, config_hash, config_json FROM runs")
        nextbatch = replace(base, method="famo-nextbatch")
        assert (row["method"], row["status"]) == ("famo-nextbatch", "complete")
        assert row["config_hash"] == nextbatch.config_hash() != base.config_hash()
        stored = json.loads(row["config_json"])
        assert stored["method"] == "famo-nextbatch" and stored["method_version"] == 1
        assert (
            complete_run(s, RunKey("famo-nextbatch", base.dataset, base.seed, nextbatch.config_hash())) == row["run_id"]
        )
        assert complete_run(s, RunKey("famo", base.dataset, base.seed, base.config_hash())) is None


def test_a_changed_default_or_version_is_a_new_cell(monkeypatch):
    from mtlbench.methods import params

    cfg = replace(build_config("smoke"), method="cagrad")
    before = cfg.config_hash()
    assert replace(cfg, method_params={"c": 0.4}).config_hash() == before  # explicit default = implicit
    assert replace(cfg, method_params={"c": 1}).config_hash() == replace(cfg, method_params={"c": 1.0}).config_hash()
    monkeypatch.setitem(params.METHOD_SPECS, "cagrad", params.METHOD_SPECS["cagrad"]._replace(version=2))
    assert cfg.config_hash() != before  # the method's math changed: its old results are not reused
    monkeypatch.setitem(params.METHOD_SPECS, "cagrad", params.METHOD_SPECS["cagrad"]._replace(version=1))
    monkeypatch.setattr(params.CAGradParams, "c", 0.5)  # a changed default
    monkeypatch.setattr(params.CAGradParams.__init__, "__defaults__", (0.5, "1+c^2"))
    assert cfg.config_hash() != before
