"""The scripts in benchmarks/ import (they are not run here: they measure, and take minutes).

A rename in mtlbench once left three of them unable to start; this catches that in seconds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_the_script_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # their shared helpers (bench_common) sit beside them
    spec = importlib.util.spec_from_file_location(f"benchmark_{script[:-3]}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # runs its imports and definitions, not its main()
    if script != "bench_common.py":  # the shared helpers; every other script is a command with a main()
        assert callable(getattr(module, "main", None)), f"{script} has no main()"
