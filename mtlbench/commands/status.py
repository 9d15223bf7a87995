"""`mtlbench status`: where a sweep stands, per method, from its results database(s) and, for a submitted
job array (a launch folder of `run --launcher`), its pending cells, its tasks' attempts and what SLURM says."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mtlbench.commands.options import add_results

HELP = "cells complete, running, failed, pending, per method: one database, a folder of shards or a submitted array"
DESCRIPTION = (
    "Per method: runs complete, running (and where: host, process, since when, last heartbeat), those that ended "
    "without a result (failed, interrupted, diverged, out of memory) and, for a sweep submitted with "
    "`run --launcher` (pass its <results stem>.shards folder), the cells no task has started, each task's attempts "
    "and the scheduler's view. Reads without writing: safe beside running sweeps."
)
ENDED = ("failed", "interrupted", "diverged", "oom")
NOT_DONE = ("running", "stale", "pending", *ENDED)  # any of these: `status` of a waited-for launch exits 1


def add_arguments(status: argparse.ArgumentParser) -> None:
    """The `status` subcommand's flags."""
    add_results(status, several=True)


def execute(args: argparse.Namespace, console: Console) -> int:
    """`mtlbench status`."""
    return show_status([Path(p).expanduser() for p in args.results], console)


def _runs(paths: list[Path]) -> list[tuple]:
    from mtlbench.errors import UserError
    from mtlbench.results.readers import rows_read_only

    sql = (
        "SELECT method, seed, json_extract(config_json, '$.tasks'), status, started_at, owner_host, owner_pid, "
        "heartbeat_at FROM runs"
    )
    try:
        return [(p, *r) for p in paths for r in rows_read_only(p, sql)]
    except Exception as exc:  # noqa: BLE001  (a file that is no results database: one line)
        raise UserError(f"cannot read the runs of {', '.join(map(str, paths))} ({type(exc).__name__}: {exc})") from None


def show_status(paths: list[Path], console: Console, exit_code: bool = False) -> int:
    """Print the status of the databases and launch folders in `paths`; with `exit_code`, 1 unless every cell
    is complete (0 otherwise always: status is a report)."""
    from mtlbench.cluster import read_manifest
    from mtlbench.results.leases import STALE_AFTER_S
    from mtlbench.results.merge import database_files

    launches = [(p, m) for p in paths if p.is_dir() for m in [read_manifest(p)] if m is not None]
    plain = [p for p in paths if not any(p == folder for folder, _ in launches)]
    files = database_files(plain) if plain else []
    for folder, _ in launches:
        files += sorted(f for f in folder.glob("*.sqlite") if f.is_file())
    rows = _runs(files)
    now = time.time()
    counts: dict[str, dict[str, int]] = {}
    running = []
    seen = set()
    for path, method, seed, tasks, status, started, host, pid, beat in rows:
        if status == "running" and (beat is None or now - beat > STALE_AFTER_S):
            status = "stale"  # its process stopped beating: the next `run` (or the task's next attempt) resumes it
        counts.setdefault(method, {}).setdefault(status, 0)
        counts[method][status] += 1
        seen.add((path.parent, method, seed, tasks))
        if status == "running":
            running.append((method, seed, host, pid, started, now - beat, path.name))
    for folder, manifest in launches:
        for cell in manifest.get("cells", []):
            if (folder, cell["method"], cell["seed"], cell["tasks"]) not in seen:
                counts.setdefault(cell["method"], {}).setdefault("pending", 0)
                counts[cell["method"]]["pending"] += 1
    title = f"{len(rows)} run(s) in {len(files)} database(s)" + (
        f", {len(launches)} submitted sweep(s)" if launches else ""
    )
    table = Table(title=title)
    columns = ("complete", "running", "stale", *ENDED, *(("pending",) if launches else ()))
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
    for folder, manifest in launches:
        show_launch(folder, manifest, console)
    if exit_code:
        return 1 if any(c.get(s) for c in counts.values() for s in NOT_DONE) else 0
    return 0


def show_launch(folder: Path, manifest: dict[str, Any], console: Console) -> None:
    """A submitted sweep's tasks: what the scheduler says of them (SLURM, through submitit) and their attempts."""
    from mtlbench.cluster import scheduler_states
    from mtlbench.shard_job import read_attempts

    shares = int(manifest["shares"])
    launcher = manifest["launcher"]
    head = f"{folder}: {launcher} " + (
        f"job array {manifest['array_job_id']}" if manifest.get("array_job_id") else "jobs"
    )
    console.print(f"{head}, {shares} task(s), submitted {manifest['submitted_at']}", highlight=False, soft_wrap=True)
    states = scheduler_states(folder, manifest) if launcher == "slurm" else {}
    if states:
        tally: dict[str, int] = {}
        for state in states.values():
            tally[state] = tally.get(state, 0) + 1
        console.print(
            "  scheduler: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(tally.items())), highlight=False
        )
    attempts = {k: read_attempts(folder, k, manifest.get("submission")) for k in range(1, shares + 1)}
    started = {k: sum("started" in r for r in recs) for k, recs in attempts.items()}
    never = [k for k, n in started.items() if n == 0]
    again = {k: n for k, n in started.items() if n > 1}
    gave_up = [k for k, recs in attempts.items() if any("gave_up" in r or "not_requeued" in r for r in recs)]
    console.print(
        f"  tasks started: {shares - len(never)} of {shares}"
        + (f"; requeued (attempts): {', '.join(f'{k} ({n})' for k, n in sorted(again.items()))}" if again else "")
        + (f"; stopped at the attempt cap: {', '.join(map(str, gave_up))}" if gave_up else ""),
        highlight=False,
        soft_wrap=True,
    )
    failed = [
        (k, r["outcome"]) for k, recs in attempts.items() for r in recs[-1:] if r.get("outcome") not in (None, "done")
    ]
    for k, outcome in failed:
        console.print(f"  task {k}: its last attempt ended with {outcome}", highlight=False, soft_wrap=True)
