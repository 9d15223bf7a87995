"""`mtlbench run` and `mtlbench export` end to end on a tiny synthetic dataset."""

import sqlite3

import pandas as pd
import pytest

from mtlbench.cli import main
from mtlbench.registry import METHODS


pytestmark = pytest.mark.slow  # a real sweep, several processes or a kill: `python -m pytest -m slow`

@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    argv = ["run", "--methods", "all", "--preset", "smoke", "--seeds", "0,1", "--synth-images", "120",
            "--image-size", "32", "--epochs", "1", "--batch-size", "16", "--quiet",
            "--results", str(root / "r.sqlite"), "--data-dir", str(root / "data")]
    return root, argv, main(argv)


def test_run_stores_a_complete_run_per_method_and_seed(sweep, capsys):
    root, _, code = sweep
    assert code == 0
    con = sqlite3.connect(root / "r.sqlite")
    rows = con.execute("SELECT method, seed, status, env_json, data_json FROM runs ORDER BY method, seed").fetchall()
    assert [(m, s, st) for m, s, st, _, _ in rows] == [
        (m, s, "complete") for m in sorted(METHODS.names()) for s in (0, 1)]
    assert all('"torch"' in env and '"git_commit"' in env for _, _, _, env, _ in rows)
    assert all("cxr14-synth" in data for *_, data in rows)


def test_rerun_skips_complete_cells(sweep, capsys):
    root, argv, _ = sweep
    before = sqlite3.connect(root / "r.sqlite").execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert main(argv) == 0
    after = sqlite3.connect(root / "r.sqlite").execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert before == after == 2 * len(METHODS.names())
    assert "ew" in capsys.readouterr().out  # the summary table still lists the skipped cells


def test_export_csv_matches_the_database(sweep, capsys):
    root, _, _ = sweep
    out = root / "export"
    assert main(["export", "--format", "csv", "--results", str(root / "r.sqlite"), "--out", str(out)]) == 0
    con = sqlite3.connect(root / "r.sqlite")
    for table in ("runs", "metrics", "weights", "costs"):
        frame = pd.read_csv(out / f"{table}.csv")
        assert len(frame) == con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] > 0
    assert not list(out.glob("*.tmp"))
