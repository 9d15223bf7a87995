"""`mtlbench run --launcher slurm|submitit-local`: the sweep submitted as a job array (mtlbench/cluster.py)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from mtlbench.errors import UserError

if TYPE_CHECKING:
    from mtlbench.plan import SweepPlan


def submit(plan: "SweepPlan", results: Path, args: argparse.Namespace, console: Console) -> int:
    """Check, submit, say where everything lands; with submitit-local, wait and show the outcome."""
    from mtlbench.cluster import slurm_settings, submit_sweep, wait_for_local
    from mtlbench.commands.options import tensorboard_dir
    from mtlbench.commands.run import SLURM_FLAGS
    from mtlbench.config import launcher_settings
    from mtlbench.single_task_init import needs_single_task_runs

    from_file = launcher_settings(args.config) if args.config else {}
    given = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _, _) in SLURM_FLAGS.items()}
    settings = slurm_settings(from_file, {**given, "extra": args.slurm_extra, "setup": args.slurm_setup})
    cells = len(plan.all_cells())
    shares = args.jobs if args.jobs is not None else cells
    if not 1 <= shares <= cells:
        raise UserError(f"--jobs {shares}: the sweep has {cells} cell(s); give 1 … {cells}")
    if any(needs_single_task_runs(c) for c in plan.all_cells()) and not plan.stl:
        raise UserError("init=stl needs the protocol's single-task runs in the same database: add --stl")
    if shares > 1 and any(needs_single_task_runs(c) for c in plan.all_cells()):
        raise UserError(
            "init=stl reads the single-task runs from the run's own database, and each array task has its own: "
            "run the --stl sweep first, then give --param deepchest.stl_accuracies=… or submit with --jobs 1"
        )
    tensorboard = tensorboard_dir(args)
    command = ["mtlbench", *sys.argv[1:]] if sys.argv and "mtlbench" in Path(sys.argv[0]).name else []
    done = submit_sweep(
        plan, results, args.launcher, settings, shares, force=args.force, tensorboard=tensorboard, command=command
    )
    folder = done.folder
    where = f" on partition {settings.partition}" if settings.partition else ""
    first = done.job_ids[0].split("_")[0]
    console.print(
        f"submitted {'job array ' + first if args.launcher == 'slurm' else 'local jobs'} "
        f"({shares} task(s) of {cells} cell(s){where}, {settings.time} each, at most {settings.max_attempts} "
        f"attempts per task) → {folder}",
        highlight=False,
        soft_wrap=True,
    )
    log = f"{first}_<task>_0_log.out" if args.launcher == "slurm" else "<job>_0_log.out"
    results_arg = shlex.quote(str(results))
    folder_arg = shlex.quote(str(folder))
    for line in (
        f"logs: {done.logs}/{log}",
        f"progress: mtlbench status --results {folder_arg}",
        f"when done: mtlbench merge {results_arg} {folder_arg}   (or read them as they are: "
        f"mtlbench report --results {folder_arg})",
        "after a preemption or a time limit: nothing to do; the task is requeued and resumes from its last epoch",
    ):
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    if args.launcher == "slurm":
        return 0
    console.print("waiting for the local jobs …", highlight=False)
    wait_for_local(done)
    from mtlbench.commands.status import show_status

    return show_status([folder], console, exit_code=True)
