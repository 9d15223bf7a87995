"""`mtlbench status`: where a sweep stands, per method, from its results database(s)."""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from mtlbench.commands.options import add_results

HELP = "cells complete, running, failed, per method, of one database or a folder of shard databases"
DESCRIPTION = (
    "Per method: runs complete, running (and where: host, process, since when, last heartbeat), and those that "
    "ended without a result (failed, interrupted, diverged, out of memory). Reads without writing: safe beside "
    "running sweeps."
)
ENDED = ("failed", "interrupted", "diverged", "oom")


def add_arguments(status: argparse.ArgumentParser) -> None:
    """The `status` subcommand's flags."""
    add_results(status, several=True)


def execute(args: argparse.Namespace, console: Console) -> int:
    """`mtlbench status`."""
    from pathlib import Path

    from mtlbench.errors import UserError
    from mtlbench.results.leases import STALE_AFTER_S
    from mtlbench.results.merge import database_files
    from mtlbench.results.readers import rows_read_only

    paths = database_files([Path(p).expanduser() for p in args.results])
    sql = "SELECT method, seed, status, started_at, owner_host, owner_pid, heartbeat_at FROM runs"
    try:
        rows = [(p, *r) for p in paths for r in rows_read_only(p, sql)]
    except Exception as exc:  # noqa: BLE001  (a file that is no results database: one line)
        raise UserError(f"cannot read the runs of {', '.join(map(str, paths))} ({type(exc).__name__}: {exc})") from None
    now = time.time()
    counts: dict[str, dict[str, int]] = {}
    running = []
    for path, method, seed, status, started, host, pid, beat in rows:
        if status == "running" and (beat is None or now - beat > STALE_AFTER_S):
            status = "stale"  # its process stopped beating: the next `run` takes the cell over
        counts.setdefault(method, {}).setdefault(status, 0)
        counts[method][status] += 1
        if status == "running":
            running.append((method, seed, host, pid, started, now - beat, path.name))
    table = Table(title=f"{len(rows)} run(s) in {len(paths)} database(s)")
    columns = ("complete", "running", "stale", *ENDED)
    table.add_column("method")
    for column in columns:
        table.add_column(column, justify="right")
    for method in sorted(counts):
        table.add_row(method, *(str(counts[method].get(c, 0) or "") for c in columns))
    console.print(table)
    for method, seed, host, pid, started, age, name in sorted(running):
        console.print(
            f"running: {method} seed {seed} on {host} (process {pid}) since {started}, last heartbeat {age:.0f} s ago"
            f" ({name})",
            highlight=False,
        )
    if any(c.get("stale") for c in counts.values()):
        console.print(
            f"stale: its process has not beaten for over {STALE_AFTER_S:.0f} s; rerunning the sweep resumes it"
        )
    return 0
