"""`mtlbench status`: per method complete / running (where, since when) / stale / ended without a result."""

from __future__ import annotations

import sqlite3
import time

from mtlbench.cli import main
from tests.test_cli_merge import train_into


def test_status_shows_a_sweep_in_progress(tmp_path, capsys) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    train_into(shards / "1.sqlite", ["ew", "dwa"], seeds=(0, 1))
    train_into(shards / "2.sqlite", ["rlw"])
    with sqlite3.connect(shards / "1.sqlite") as con:  # dwa seed 1 is being trained by a live process; ew seed 1 died
        con.execute(
            "UPDATE runs SET status='running', owner_host='node7', owner_pid=4242, heartbeat_at=? "
            "WHERE method='dwa' AND seed=1",
            (time.time() - 3,),
        )
        con.execute(
            "UPDATE runs SET status='running', heartbeat_at=? WHERE method='ew' AND seed=1", (time.time() - 999,)
        )
    with sqlite3.connect(shards / "2.sqlite") as con:
        con.execute("UPDATE runs SET status='failed'")
    assert main(["status", "--results", str(shards)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in out.splitlines()
            if line.startswith("│")}  # fmt: skip
    # columns: complete, running, stale, failed, interrupted, diverged, oom
    assert rows["dwa"][:3] == ["1", "1", ""] and rows["ew"][:3] == ["1", "", "1"] and rows["rlw"][3] == "1"
    assert "running: dwa seed 1 on node7 (process 4242)" in out and "stale:" in out
    assert main(["status", "--results", str(tmp_path / "none.sqlite")]) == 2
