"""Determinism on the CPU: the same command in two processes stores the same numbers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real sweep, several processes or a kill: `python -m pytest -m slow`

METRICS = (
    "SELECT r.method, r.seed, m.split, m.epoch, m.task, m.loss, m.accuracy, m.auroc, m.ap "
    "FROM metrics m JOIN runs r USING (run_id) ORDER BY r.method, r.seed, m.split, m.epoch, m.task"
)
WEIGHTS = (
    "SELECT r.method, w.epoch, w.step, w.task, w.weight FROM weights w JOIN runs r USING (run_id) "
    "ORDER BY r.method, w.epoch, w.step, w.task"
)


def _run(tmp_path: Path, name: str) -> Path:
    results = tmp_path / f"{name}.sqlite"
    command = [
        sys.executable,
        "-m",
        "mtlbench.cli",
        "run",
        "--methods",
        "ew,deepchest,rlw,mgda-ub,pcgrad",
        "--preset",
        "smoke",
        "--synth-images",
        "120",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--quiet",
        "--results",
        str(results),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return results


def _rows(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as con:
        return con.execute(sql).fetchall()


def test_same_config_and_seed_store_identical_metrics_in_two_processes(tmp_path) -> None:
    first, second = _run(tmp_path, "first"), _run(tmp_path, "second")
    metrics = _rows(first, METRICS)
    # 5 methods, seed 0: train and val rows for each of 2 epochs and the test rows, 14 tasks each
    assert len(metrics) == 5 * (2 * 2 + 1) * 14 and metrics == _rows(second, METRICS)  # exact, not approximate
    assert _rows(first, WEIGHTS) == _rows(second, WEIGHTS)
