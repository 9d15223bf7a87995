"""Determinism on the CPU: the same command in two processes stores the same numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtlbench.results.readers import computed_results
from tests.sweeps import run_cli, smoke_sweep

pytestmark = pytest.mark.slow  # a real sweep, several processes or a kill: `python -m pytest -m slow`


def _run(tmp_path: Path, name: str) -> dict[str, list[tuple]]:
    results = tmp_path / f"{name}.sqlite"
    done = run_cli(smoke_sweep("ew,deepchest,rlw,mgda-ub,pcgrad", results, tmp_path / "data"))
    assert done.returncode == 0, done.stdout + done.stderr
    return computed_results(results)


def test_same_config_and_seed_store_identical_metrics_in_two_processes(tmp_path) -> None:
    first, second = _run(tmp_path, "first"), _run(tmp_path, "second")
    # 5 methods, seed 0: train and val rows for each of 2 epochs and the test rows, 14 tasks each
    assert len(first["metrics"]) == 5 * (2 * 2 + 1) * 14
    assert first == second  # metrics, weights, predictions, diagnostics: exact, not approximate
