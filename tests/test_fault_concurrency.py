"""Fault class: several processes write one results database.

Two real `mtlbench run` processes share a database and never run the same cell twice; a claim
is left alone while its process lives and taken over once it is dead or silent.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtlbench.results.leases import Heartbeat, Owner
from mtlbench.results.store import ResultsStore, RunKey
from tests.sweeps import cli_command, smoke_sweep
from tests.patching import argument_reader
from tests.tiny_model import tiny_model
from tests.configs import cpu_smoke_config

KEY = RunKey("ew", "toy", 0, "abc123")


def _claim(store: ResultsStore, owner: Owner, force: bool = False):
    return store.claim_run(KEY, "{}", {}, "sum-to-T", owner, force=force)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_live_claim_is_left_alone_and_dead_or_silent_claims_are_taken_over(tmp_path) -> None:
    me = Owner()
    with ResultsStore(tmp_path / "r.sqlite") as store:
        first = _claim(store, Owner(host=me.host, pid=_dead_pid()))
        assert (first.action, first.taken_over) == ("run", False)
        # same host, pid gone: taken over at once, the same run row (so it can resume)
        taken = _claim(store, me)
        assert (taken.action, taken.run_id, taken.taken_over) == ("run", first.run_id, True)
        # a live process on this host (our parent) with a fresh heartbeat: left to it
        store.conn.execute("UPDATE runs SET owner_pid=?, heartbeat_at=?", (os.getppid(), time.time()))
        store.conn.commit()
        assert _claim(store, me).action == "busy"
        assert _claim(store, me, force=True).action == "busy"  # --force never steals a live run
        # another host: alive while its heartbeat is fresh, dead once it is stale
        store.conn.execute("UPDATE runs SET owner_host='gpu-node-7', owner_pid=1, heartbeat_at=?", (time.time(),))
        store.conn.commit()
        assert _claim(store, me).action == "busy"
        store.conn.execute("UPDATE runs SET heartbeat_at=?", (time.time() - me.stale_after_s - 1,))
        store.conn.commit()
        assert _claim(store, me).action == "run"
        # a final result is kept; --force replaces it with a new run
        store.finish_run(first.run_id, "oom", error="out of memory")
        done = _claim(store, me)
        assert (done.action, done.status) == ("done", "oom")
        forced = _claim(store, me, force=True)
        assert forced.action == "run" and not forced.taken_over and forced.run_id != first.run_id
        assert [r["run_id"] for r in store.query("SELECT run_id FROM runs")] == [forced.run_id]


def test_heartbeat_refreshes_the_claim_until_the_run_ends(tmp_path) -> None:
    me = Owner()
    with ResultsStore(tmp_path / "r.sqlite") as store:
        run_id = _claim(store, me).run_id
        store.conn.execute("UPDATE runs SET heartbeat_at=0")
        store.conn.commit()
        with Heartbeat(store.path, run_id, me, every_s=0.05):
            time.sleep(0.3)
        beat = store.query("SELECT heartbeat_at FROM runs")[0]["heartbeat_at"]
        assert time.time() - beat < 1.0
        time.sleep(0.2)
        assert store.query("SELECT heartbeat_at FROM runs")[0]["heartbeat_at"] == beat  # stopped with the run


def _sweep(results: Path, data: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cli_command(smoke_sweep("ew,deepchest,dwa,rlw", results, data, quiet=False, extra=["--seeds", "0,1"])),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # two processes on a 2-core machine: no oversubscription
    )


@pytest.mark.slow  # a real sweep, several processes or a kill: `python -m pytest -m slow`
def test_two_processes_share_a_database_and_never_run_a_cell_twice(tmp_path) -> None:
    results, data = tmp_path / "r.sqlite", tmp_path / "data"
    procs = [_sweep(results, data), _sweep(results, data)]  # at once, data not yet generated
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err
    trained = [set(re.findall(r"^(\S+ seed \d): epoch 1/2", out, re.M)) for out, _ in outs]
    assert not trained[0] & trained[1], trained  # no cell trained by both
    assert len(trained[0] | trained[1]) == 8
    with sqlite3.connect(results) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        cells = con.execute("SELECT method, seed, status, COUNT(*) FROM runs GROUP BY config_hash").fetchall()
        pids = {r[0] for r in con.execute("SELECT DISTINCT owner_pid FROM runs")}
    assert len(cells) == 8 and all(c[2:] == ("complete", 1) for c in cells), cells
    assert pids <= {p.pid for p in procs}  # every run was claimed by one of the two


def test_a_run_taken_over_by_another_process_stops_without_writing(toy_bundle, tmp_path, monkeypatch) -> None:

    import mtlbench.training.loop as train_mod
    from mtlbench.training import train_run

    cfg = cpu_smoke_config(epochs=2, batch_size=16)
    real_step = train_mod.training_step
    step_of = argument_reader(real_step, "step")

    def lose_the_claim(*args, **kwargs):
        if step_of(*args, **kwargs) == 1:  # meanwhile, a process that thought this one dead took the run over
            with sqlite3.connect(tmp_path / "r.sqlite") as con:
                con.execute("UPDATE runs SET owner_token='another-process'")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "training_step", lose_the_claim)
    with ResultsStore(tmp_path / "r.sqlite") as store:
        out = train_run(cfg, toy_bundle, store, {}, model_factory=tiny_model)
        assert out.status == "busy" and "taken over by another process" in out.detail
        assert store.query("SELECT status FROM runs")[0]["status"] == "running"  # left to its new owner
        assert store.query("SELECT COUNT(*) AS n FROM metrics")[0]["n"] == 0  # nothing written after losing it
