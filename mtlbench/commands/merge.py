"""`mtlbench merge`: combine results databases (one per shard or job) into one."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

HELP = "combine results databases (one per shard or job) into one"
DESCRIPTION = (
    "Copy every run of the input databases into OUT (created if absent). Idempotent: a result OUT already holds "
    "is left alone; a run that is not a result (failed, interrupted) gives way to a result for the same cell; two "
    "different results for one cell are refused and nothing is written."
)


def add_arguments(merge: argparse.ArgumentParser) -> None:
    """The `merge` subcommand's arguments."""
    merge.add_argument("out", help="the merged database (e.g. results/merged.sqlite)")
    merge.add_argument("inputs", nargs="+", help="results databases, or folders of *.sqlite files (OUT is skipped)")


def execute(args: argparse.Namespace, console: Console) -> int:
    """`mtlbench merge OUT IN…`."""
    from mtlbench.paths import results_path
    from mtlbench.results.merge import database_files, merge_databases

    out = results_path(args.out, must_exist=False)
    inputs = database_files([Path(p) for p in args.inputs], out)
    summary = merge_databases(out, inputs)
    console.print(
        f"merged {len(inputs)} database(s) into {out}: {summary.copied} run(s) copied "
        f"({summary.replaced} replacing a failed or interrupted run of the same cell), {summary.already} result(s) "
        f"already there, {summary.kept} unfinished run(s) left out (the cell is there)",
        highlight=False,
        soft_wrap=True,
    )
    return 0
