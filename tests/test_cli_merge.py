"""`mtlbench merge` and `run --shard`: shards of one sweep, each in its own database, merged into one that
holds exactly what one process would have stored; idempotent; conflicts refused, nothing written."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace

import pytest
import torch

from mtlbench.cli import main
from mtlbench.errors import UserError
from mtlbench.plan import SweepPlan, parse_shard
from mtlbench.results.merge import database_files, merge_databases
from mtlbench.results.readers import computed_results
from mtlbench.results.store import ResultsStore
from mtlbench.training import train_run
from tests.conftest import make_bundle
from tests.test_train import CFG
from tests.tiny_model import tiny_model


def train_into(path, methods, seeds=(0,), data=None, cfg=CFG):
    with ResultsStore(path) as store:
        for method in methods:
            for seed in seeds:
                train_run(
                    replace(cfg, method=method, seed=seed), data or make_bundle(), store, {"torch": torch.__version__},
                    model_factory=tiny_model,
                )  # fmt: skip


def test_shards_merge_into_what_one_process_stores(tmp_path) -> None:
    plan = SweepPlan(CFG, ("ew", "dwa", "rlw"), (0, 1), {})
    shards = [replace(plan, shard=(k, 3)) for k in (1, 2, 3)]
    cells = [c for s in shards for c in s.cells()]
    assert sorted((c.method, c.seed) for c in cells) == sorted((c.method, c.seed) for c in plan.all_cells())
    assert len({(c.method, c.seed) for c in cells}) == len(cells) == 6  # every cell in exactly one shard
    data = make_bundle()
    single = tmp_path / "single.sqlite"
    with ResultsStore(single) as store:
        for cell in plan.cells():
            train_run(cell, data, store, {"torch": torch.__version__}, model_factory=tiny_model)
    for k, shard in enumerate(shards, start=1):
        with ResultsStore(tmp_path / f"shard-{k}.sqlite") as store:
            for cell in shard.cells():
                train_run(cell, data, store, {"torch": torch.__version__}, model_factory=tiny_model)
    out = tmp_path / "merged" / "all.sqlite"
    out.parent.mkdir()
    inputs = database_files([tmp_path], out)
    assert [p.name for p in inputs] == ["shard-1.sqlite", "shard-2.sqlite", "shard-3.sqlite", "single.sqlite"]
    summary = merge_databases(out, inputs[:3])
    assert (summary.copied, summary.already) == (6, 0)
    assert computed_results(out) == computed_results(single)  # every number, exactly
    again = merge_databases(out, inputs)  # the shards again, and the single-process file: the same results
    assert (again.copied, again.already) == (0, 12)
    assert computed_results(out) == computed_results(single)


def test_a_result_replaces_a_failed_run_and_conflicts_are_refused(tmp_path) -> None:
    a, b, out = tmp_path / "a.sqlite", tmp_path / "b.sqlite", tmp_path / "out.sqlite"
    train_into(a, ["ew"])
    train_into(b, ["ew"])
    with sqlite3.connect(a) as con:  # a's copy of the cell did not finish
        con.execute("UPDATE runs SET status='failed'")
    merge_databases(out, [a])
    summary = merge_databases(out, [b])
    assert (summary.copied, summary.replaced) == (1, 1)
    assert sqlite3.connect(out).execute("SELECT status FROM runs").fetchall() == [("complete",)]
    live = tmp_path / "live.sqlite"
    train_into(live, ["ew"])
    with sqlite3.connect(live) as con:  # a sweep is training the cell into this file right now
        con.execute("UPDATE runs SET status='running', owner_host='node1', owner_pid=7, heartbeat_at=?", (time.time(),))
    untouched = computed_results(live)
    with pytest.raises(UserError, match="being written by a running sweep.*nothing was written"):
        merge_databases(live, [b])
    assert computed_results(live) == untouched
    with sqlite3.connect(a) as con:  # now a holds a result for the cell that differs from b's
        con.execute("UPDATE runs SET status='complete'")
        con.execute("UPDATE metrics SET auroc = auroc + 0.01 WHERE split='test'")
    before = computed_results(out)
    with pytest.raises(UserError, match="different results for the same cell.*nothing was written"):
        merge_databases(out, [a])
    assert computed_results(out) == before


def test_merge_and_shard_through_the_cli(tmp_path, capsys) -> None:
    a = tmp_path / "shards" / "a.sqlite"
    a.parent.mkdir()
    train_into(a, ["ew", "dwa"])
    out = tmp_path / "merged.sqlite"
    assert main(["merge", str(out), str(tmp_path / "shards")]) == 0
    assert "2 run(s) copied" in capsys.readouterr().out
    assert main(["merge", str(out), str(tmp_path / "nothing-here")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert parse_shard("2/8") == (2, 8) and parse_shard(None) == (1, 1)
    for bad in ("0/3", "4/3", "1-3", "a/b"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)


def test_report_and_export_read_several_databases_merged(tmp_path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    data = make_bundle()
    train_into(shards / "1.sqlite", ["ew"], data=data)
    train_into(shards / "2.sqlite", ["dwa"], data=data)
    merged = tmp_path / "merged.sqlite"
    merge_databases(merged, database_files([shards]))
    args = ["--resamples", "100", "--quiet"]
    assert main(["report", "--results", str(merged), "--out", str(tmp_path / "one"), *args]) == 0
    assert main(["report", "--results", str(shards), "--out", str(tmp_path / "many"), *args]) == 0
    one = sorted((tmp_path / "one" / "tables").glob("leaderboard_*.csv"))
    many = sorted((tmp_path / "many" / "tables").glob("leaderboard_*.csv"))
    assert [p.read_text() for p in one] == [p.read_text() for p in many] and one
    files = [str(shards / "1.sqlite"), str(shards / "2.sqlite")]
    assert main(["export", "--results", *files, "--out", str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / "runs.csv").read_text().count("\n") == 3  # header + two runs
