"""The short real sweeps the slow tests run through the CLI, and read-only reads of what they stored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Sequence

# cxr14-synth at the smoke preset, shrunk to 120 images and batches of 16: seconds per run on 2 cores
SMOKE_FLAGS = "--preset smoke --synth-images 120 --batch-size 16".split()


def smoke_sweep(
    methods: str,
    results: Path | None = None,
    data: Path | None = None,
    *,
    epochs: int = 2,
    quiet: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    """`mtlbench run` arguments of a smoke sweep of `methods` (comma-separated) into `results`, data in `data`."""
    args = ["run", "--methods", methods, *SMOKE_FLAGS, "--epochs", str(epochs), *extra]
    args += ["--quiet"] if quiet else []
    args += ["--results", str(results)] if results is not None else []
    return args + (["--data-dir", str(data)] if data is not None else [])


def report_args(results: Path, out: Path, *, resamples: int = 100, min_positives: int | None = None) -> list[str]:
    """`mtlbench report` arguments for a quiet report of `results` into `out`."""
    args = ["report", "--results", str(results), "--out", str(out), "--quiet", "--resamples", str(resamples)]
    return args + (["--min-positives", str(min_positives)] if min_positives is not None else [])


def cli_command(args: Sequence[str]) -> list[str]:
    """The command line that runs `mtlbench` with `args` in a fresh interpreter."""
    return [sys.executable, "-m", "mtlbench.cli", *args]


def run_cli(args: Sequence[str], *, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `mtlbench args` in its own process and return it finished, output captured as text."""
    return subprocess.run(cli_command(args), capture_output=True, text=True, cwd=cwd, timeout=timeout)
