"""`mtlbench run`: train each method × seed on one dataset and store the results."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.console import Console

from mtlbench.commands.options import add_methods, add_quiet, add_training_settings, config_from, tensorboard_dir
from mtlbench.commands.outcomes import FAILED_STATUSES, print_notes, sigterm_as_interrupt
from mtlbench.config import preset_params, preset_sweep, validate
from mtlbench.errors import UserError, interrupted_means
from mtlbench.paths import results_path
from mtlbench.tasks import TASK_NAMES

if TYPE_CHECKING:
    from pathlib import Path

    from mtlbench.plan import SweepPlan

INTERRUPTED = (
    "the current run is stored as interrupted and resumes from its last checkpoint when you rerun the same command"
)


HELP = "train methods × seeds and store the results"
DESCRIPTION = (
    "Train each method × seed on one dataset and store results in SQLite. "
    "With no options: the core methods, cxr14-synth, the quick preset, seed 0."
)


def add_arguments(run: argparse.ArgumentParser) -> None:
    """The `run` subcommand's flags."""
    add_methods(run)
    run.add_argument("--seeds", help="e.g. 0 or 0,1,2 or 0-4 (default 0; the lite preset: 0,1,2)")
    add_training_settings(run, "a method hyperparameter, e.g. deepchest.signal=val-accuracy (repeatable)")
    run.add_argument(
        "--stl",
        action="store_true",
        help="also train the single-task baseline: one run of `stl` per task and seed (14 × the cost of EW); "
        "the report joins each seed's runs into one `stl` row and measures Δm%% against it",
    )
    run.add_argument(
        "--ladder",
        action="store_true",
        help="the DeepChest ladder: from these settings (use --preset paper) to the authors' protocol, one of their "
        "choices added per rung (split, selection, evaluation, optimizers, implementations, backbone), each rung "
        "with ew, deepchest and their two baselines; the report shows each rung (mtlbench/ladder.py)",
    )
    run.add_argument(
        "--shard",
        metavar="K/N",
        help="run only the K-th of N interleaved shares of the sweep's cells (1-based; every cell is in exactly one "
        "share): N processes or jobs with --shard 1/N … N/N, each into its own --results file, then `mtlbench merge`",
    )
    run.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run the sweep in N worker processes on this machine, the CPU cores split between them (each pinned "
        "to its share, OMP_NUM_THREADS set): each cell runs once, in whichever worker takes it first",
    )
    run.add_argument(
        "--devices",
        metavar="0,1,…",
        help="one worker process per GPU (each sees its GPU as cuda:0; the CPU cores split between them), one "
        "progress display; Ctrl-C stops them all",
    )
    add_launcher(run)
    run.add_argument(
        "--force",
        action="store_true",
        help="rerun cells that already have a result (complete, diverged or out of memory)",
    )
    add_quiet(run)


SLURM_FLAGS = {  # --slurm-X → (SlurmSettings field, type, help)
    "--slurm-partition": ("partition", str, "the partition (queue) to submit to"),
    "--slurm-time": (
        "time",
        str,
        "time limit of each attempt: minutes or H:MM:SS / D-HH:MM:SS (default 4:00:00); a "
        "cell still running then is requeued and resumes from its last epoch",
    ),
    "--slurm-gpus-per-job": (
        "gpus_per_job",
        int,
        "GPUs per array task: 1 (default) or 0 for CPU nodes",
    ),
    "--slurm-cpus-per-job": ("cpus_per_job", int, "CPU cores per array task (default: the partition's)"),
    "--slurm-mem": ("mem", str, "memory per node, e.g. 64G (default: the partition's)"),
    "--slurm-array-parallelism": ("array_parallelism", int, "at most this many tasks at once (default: all)"),
    "--slurm-account": ("account", str, "the account to charge"),
    "--slurm-max-attempts": (
        "max_attempts",
        int,
        "attempts of one share (its first run and requeues after a "
        "time limit or preemption), default 4: a cell that fails every time stops there",
    ),
}


def add_launcher(run: argparse.ArgumentParser) -> None:
    """--launcher, --jobs and the --slurm-* flags."""
    from mtlbench.cluster import LAUNCHERS

    group = run.add_argument_group("cluster (README: Running on a cluster)")
    group.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        help="slurm: submit the sweep as one SLURM job array through submitit and return at once; each task runs "
        "one share (--shard K/N) into its own database in <results stem>.shards/ (safe on NFS/Lustre/GPFS). "
        "submitit-local: the same jobs as subprocesses here, waited for (to try the cluster path)",
    )
    group.add_argument(
        "--jobs", type=int, metavar="N", help="array tasks (shares of the cells) to submit (default: one per cell)"
    )
    for flag, (field, typ, text) in SLURM_FLAGS.items():
        group.add_argument(flag, type=typ, default=None, metavar="N" if typ is int else field.upper(), help=text)
    group.add_argument(
        "--slurm-extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another sbatch option (repeatable), e.g. qos=high, constraint=a100, exclude=node12",
    )
    group.add_argument(
        "--slurm-setup",
        action="append",
        default=[],
        metavar="LINE",
        help='a shell line the job runs first (repeatable), e.g. "module load cuda/12.4". The --slurm-* '
        'settings can also come from the --config file\'s "slurm" object, e.g. {"slurm": {"partition": "gpu"}}',
    )


def ladder_plans(args: argparse.Namespace) -> list["SweepPlan"]:
    """One sweep per rung of the ladder (mtlbench/ladder.py), from the settings given; checked (no torch)."""
    from mtlbench.hyperparams import parse_method_params
    from mtlbench.ladder import RUNGS, is_rung_zero, rung_configs
    from mtlbench.plan import SweepPlan, check_cell_count, check_methods_fit, parse_seeds

    given = [
        flag
        for flag, used in (
            ("--methods", args.methods),
            ("--stl", args.stl),
            ("--param", args.param),
            ("--shard", args.shard),
        )
        if used
    ]
    if given:
        raise UserError(f"--ladder fixes each rung's methods and their settings: drop {', '.join(given)}")
    base = config_from(args)
    if not is_rung_zero(base) or base.tasks:
        raise UserError(
            "--ladder starts from the fair protocol and adds the authors' choices itself: drop --split, --select, "
            "--augment-eval, --method-optimizers and --tasks (and use --preset paper, not authors)"
        )
    seeds = parse_seeds(preset_sweep(args.preset, None, args.seeds)[1])
    plans = []
    for index, (rung, config) in enumerate(zip(RUNGS, rung_configs(base))):
        try:
            validate(config)
        except UserError as exc:
            raise UserError(f"--ladder rung {index} ({rung.name}): {exc}") from None
        check_cell_count(rung.methods(), seeds)
        items = [f"{m}.{k}={v}" for m, p in rung.method_params().items() for k, v in p.items()]
        params = parse_method_params(items, rung.methods())
        check_methods_fit(config, rung.methods())
        plans.append(SweepPlan(config, rung.methods(), seeds, params))
    return plans


def plan_from(args: argparse.Namespace) -> "SweepPlan":
    """The sweep `run` asks for, every setting, method, seed and hyperparameter checked (no torch)."""
    from mtlbench.hyperparams import parse_method_params
    from mtlbench.plan import SweepPlan, check_cell_count, check_methods_fit, parse_methods, parse_seeds, parse_shard

    base = config_from(args)
    args.methods, args.seeds = preset_sweep(args.preset, args.methods, args.seeds)
    methods = parse_methods(args.methods)
    seeds = parse_seeds(args.seeds)
    if args.stl and base.tasks:
        raise UserError("--stl trains each of the 14 tasks on its own, beside multi-task runs of all 14: drop --tasks")
    check_cell_count(methods, seeds, stl=args.stl)
    params = parse_method_params([*preset_params(args.preset, methods), *args.param], methods)
    check_methods_fit(base, methods)
    shard = parse_shard(args.shard)
    plan = SweepPlan(base, methods, seeds, params, stl=args.stl, shard=shard)
    if not plan.cells():
        raise UserError(
            f"--shard {args.shard}: the sweep has {len(plan.all_cells())} cell(s), none in share {shard[0]}"
        )
    return plan


def execute(args: argparse.Namespace, console: Console) -> int:
    """`mtlbench run`; exit code 1 when a run failed, diverged or ran out of memory."""
    check_launcher_flags(args)
    plans = ladder_plans(args) if args.ladder else [plan_from(args)]
    results = results_path(args.results, must_exist=False)
    if args.launcher:
        from mtlbench.commands.launch import submit

        return submit(plans[0], results, args, console)
    args.tensorboard = tensorboard_dir(args)
    if args.workers is not None or args.devices is not None:
        from mtlbench.workers import plan_slots

        args.slots = plan_slots(args.workers, args.devices)
        check_workers_fit(plans[0], args.slots, results)
    if args.ladder:
        from mtlbench.ladder import RUNGS
        from mtlbench.model import trunk  # torch from here on

        for index, (rung, plan) in enumerate(zip(RUNGS, plans)):  # a later rung's weights, before any training
            if plan.base.pretrained != "none":
                try:
                    trunk(
                        plan.base.arch,
                        plan.base.pretrained,
                        otherwise="run the rungs before it one by one (README: the ladder)",
                    )
                except UserError as exc:
                    raise UserError(f"--ladder rung {index} ({rung.name}): {exc}") from None
        total = sum(len(p.cells()) for p in plans)
        console.print(f"mtlbench run --ladder: {len(plans)} rungs, {total} run(s) in all", highlight=False)
        code = 0
        for index, (rung, plan) in enumerate(zip(RUNGS, plans)):
            console.print(f"[bold]rung {index}: {rung.name}[/bold]", highlight=False)
            code = max(code, run_plan(plan, args, results, console))
        return code
    return run_plan(plans[0], args, results, console)


def run_plan(plan: "SweepPlan", args: argparse.Namespace, results: "Path", console: Console) -> int:
    """Run one sweep with its header, warnings, progress display and end-of-run table; 1 if a run failed."""
    from mtlbench.plan import protocol_warnings
    from mtlbench.progress import SweepDisplay
    from mtlbench.sweep import run_sweep
    from mtlbench.sweep_table import summary_table
    from mtlbench.training import resolve_runtime

    base, methods = plan.base, plan.methods
    seeds = ",".join(str(s) for s in plan.seeds)
    resolved = resolve_runtime(base)
    console.print(
        f"mtlbench run: {len(plan.cells())} run(s)"
        + (f" (share {plan.shard[0]} of {plan.shard[1]} of {len(plan.all_cells())})" if plan.shard != (1, 1) else "")
        + f": {', '.join(methods)} × seeds {seeds}"
        + (f" + stl × {len(TASK_NAMES)} tasks × seeds {seeds}" if plan.stl else "")
        + " "
        f"on {base.dataset} (preset {args.preset}, {base.epochs} epochs, {base.image_size} px; "
        f"{resolved.device}, {resolved.precision}{', compiled' if base.compile else ''}) "
        f"→ {results}",
        soft_wrap=True,
        highlight=False,
    )
    if args.tensorboard is not None:
        console.print(
            f"TensorBoard views → {args.tensorboard} (tensorboard --logdir {args.tensorboard})",
            highlight=False,
            markup=False,
        )
    for line in protocol_warnings(base, methods, plan.method_params):
        console.print(f"[yellow]warning: {line}[/yellow]", soft_wrap=True, highlight=False)
    slots = getattr(args, "slots", None)
    with sigterm_as_interrupt(), interrupted_means(INTERRUPTED):
        if slots:
            outcomes, stopped = run_on_workers(plan, results, slots, args, console)
        else:
            with SweepDisplay(console, len(plan.cells()), enabled=not args.quiet) as display:
                outcomes = run_sweep(plan, results, display, force=args.force, tensorboard=args.tensorboard)
            stopped = {}
    console.print(summary_table(results, outcomes))
    skipped = sum(o.status == "skipped" for o in outcomes)
    if skipped:
        console.print(f"{skipped} run(s) were already complete in {results} and were not rerun (--force reruns them).")
    print_notes(outcomes, console)
    bad = [o for o in outcomes if o.status in FAILED_STATUSES]
    for o in bad:
        console.print(f"[red]{o.method} seed {o.seed}: {o.status}[/red] — {o.detail}", highlight=False)
    for slot in slots or []:
        if slot.index in stopped:
            console.print(f"[red]{slot.describe()} stopped: {stopped[slot.index]}[/red]", highlight=False)
    if stopped:
        console.print("rerun the same command: complete runs are kept, an interrupted one resumes")
    return 1 if bad or stopped else 0


def check_launcher_flags(args: argparse.Namespace) -> None:
    """Refuse --slurm-* or --jobs without --launcher, and --launcher with what it does itself or cannot do."""
    given = [f for f in ("--jobs", *SLURM_FLAGS) if getattr(args, f[2:].replace("-", "_")) is not None]
    given += [f for f in ("--slurm-extra", "--slurm-setup") if getattr(args, f[2:].replace("-", "_"))]
    if given and not args.launcher:
        raise UserError(f"{given[0]} is a setting of the submitted jobs: add --launcher slurm")
    if args.launcher:
        clashing = [
            flag
            for flag, used in (
                ("--shard", args.shard),
                ("--workers", args.workers),
                ("--devices", args.devices),
                ("--ladder", args.ladder),
            )
            if used
        ]
        if clashing:
            what = {
                "--shard": "it gives each array task its share itself",
                "--ladder": "submit each rung on its own",
            }.get(clashing[0], "each task trains on one GPU; more tasks (--jobs) run more at once")
            raise UserError(f"--launcher with {clashing[0]}: {what}")


def check_workers_fit(plan: "SweepPlan", slots: list, results: "Path") -> None:
    """Refuse workers where they cannot work: --device other than auto or cuda with --devices, a GPU that is not
    there, or a results database on a network filesystem (several writers need SQLite's WAL mode there)."""
    from mtlbench.results.schema import network_filesystem
    from mtlbench.workers import check_devices_exist

    check_devices_exist(slots, plan.base.device)
    fs = network_filesystem(results)
    if fs:
        raise UserError(
            f"--results {results} is on a {fs} filesystem, where several processes cannot share one SQLite database "
            "safely: put --results on a local disk, or give each process its own file (--shard K/N, "
            "--launcher slurm) and `mtlbench merge` them"
        )


def run_on_workers(
    plan: "SweepPlan", results: "Path", slots: list, args: argparse.Namespace, console: Console
) -> tuple[list, dict[int, str]]:
    """The sweep on one worker process per slot, one display; (each cell's outcome, worker → why it stopped)."""
    from mtlbench.progress import WorkersDisplay
    from mtlbench.workers import run_workers

    console.print(f"{len(slots)} workers: " + ", ".join(s.describe() for s in slots), highlight=False, soft_wrap=True)
    names = {s.index: s.describe() for s in slots}
    with WorkersDisplay(console, len(plan.cells()), names, enabled=not args.quiet) as display:
        done = run_workers(plan, results, slots, display, force=args.force, tensorboard=args.tensorboard)
    return done.outcomes, done.errors
