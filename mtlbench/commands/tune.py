"""`mtlbench tune`: equal-budget tuning of every method, selected on validation, then run × seeds."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.console import Console

from mtlbench.commands.options import add_methods, add_quiet, add_training_settings, config_from, tensorboard_dir
from mtlbench.commands.outcomes import FAILED_STATUSES, print_notes, sigterm_as_interrupt
from mtlbench.config import load_config_file, preset_params, preset_sweep
from mtlbench.errors import UserError, interrupted_means
from mtlbench.paths import results_path

if TYPE_CHECKING:
    from mtlbench.tuning import Point, TunePlan

INTERRUPTED = (
    "the current run is stored as interrupted; rerun the same command: finished trials and runs are kept, "
    "the interrupted one resumes from its last checkpoint"
)


HELP = "tune every method with the same budget, select on validation, run the selection × seeds"
DESCRIPTION = (
    "Equal-budget tuning. Per method: --trials configurations from its declared search space "
    "(the learning rate and weight decay, the same grid for every method, and the method's own "
    "hyperparameters; the whole grid when it has no more points, else the defaults and seeded "
    "random draws), each trained with --trial-seed; the trial with the best validation mean AUROC "
    "(at its selected epoch; the test split is never read) is selected and run with every seed of "
    "--seeds. Every trial and run is an ordinary cell of the results database: rerun the same "
    "command to resume, several processes may share it. A setting given on the command line "
    "(--lr, --weight-decay, --param METHOD.NAME=VALUE, or in --config) is fixed, not searched."
)


def add_arguments(tune: argparse.ArgumentParser) -> None:
    """The `tune` subcommand's flags."""
    add_methods(tune)
    tune.add_argument(
        "--trials",
        type=int,
        required=True,
        metavar="N",
        help="configurations tried per method (the same budget for every method)",
    )
    tune.add_argument("--seeds", default="0,1,2", help="seeds of the selected configuration's runs (default 0,1,2)")
    tune.add_argument(
        "--trial-seed",
        type=int,
        default=None,
        metavar="SEED",
        help="seed of every trial and of the random draw of configurations (default 1000: apart from "
        "--seeds, so that no reported test number comes from the run that won the selection)",
    )
    add_training_settings(
        tune, "fix a method hyperparameter (it is then not searched), e.g. deepchest.signal=val-accuracy"
    )
    tune.add_argument(
        "--dry-run", action="store_true", help="print each method's search space and trials, train nothing"
    )
    add_quiet(tune)


def tune_plan_from(args: argparse.Namespace) -> "TunePlan":
    """The tuning `tune` asks for, every setting, method, seed, hyperparameter and space checked (no torch)."""
    from mtlbench.hyperparams import parse_method_params
    from mtlbench.plan import MAX_CELLS, check_methods_fit, parse_methods, parse_seeds
    from mtlbench.tuning import SHARED_SPACE, TRIAL_SEED, plan_tune

    if not 1 <= args.trials <= MAX_CELLS:
        raise UserError(f"--trials must be between 1 and {MAX_CELLS:,}, got {args.trials}")
    base = config_from(args)
    args.methods = preset_sweep(args.preset, args.methods, args.seeds)[0]
    methods = parse_methods(args.methods)
    seeds = parse_seeds(args.seeds)
    params = parse_method_params([*preset_params(args.preset, methods), *args.param], methods)  # fixed, not searched
    check_methods_fit(base, methods)
    in_file = load_config_file(args.config) if args.config else {}
    fixed = [name for name in SHARED_SPACE if getattr(args, name, None) is not None or name in in_file]
    trial_seed = TRIAL_SEED if args.trial_seed is None else args.trial_seed
    plan = plan_tune(base, methods, seeds, args.trials, trial_seed, params, fixed)
    if plan.total_runs() > MAX_CELLS:
        raise UserError(
            f"this tuning is {plan.total_runs():,} runs (trials and seeds × methods); one command runs at "
            f"most {MAX_CELLS:,}: tune fewer methods per command with the same --results"
        )
    return plan


def _search_lines(plan: "TunePlan") -> list[str]:
    """Per method: its space, and how its trials are chosen."""
    lines = []
    for m in plan.methods:
        space, n = plan.spaces[m], len(plan.points[m])
        how = (
            f"the whole grid ({n} trial{'s' if n != 1 else ''})"
            if n == space.size
            else f"{n} drawn at random (trial seed {plan.trial_seed})"
        )
        default = "" if plan.points[m][0] != _default(plan, m) else ", the defaults first"
        lines.append(f"  {m}: {space.describe()}; {how}{default}")
    return lines


def _default(plan: "TunePlan", method: str) -> "Point":
    from mtlbench.tuning import default_point

    return default_point(plan.spaces[method], plan.base, plan.method_params.get(method))


def _print(console: Console, line: str) -> None:
    console.print(line, soft_wrap=True, highlight=False, markup=False)


def _dry_run(plan: "TunePlan", head: str, args: argparse.Namespace, console: Console) -> int:
    _print(console, head + f" on {plan.base.dataset} (preset {args.preset}); {plan.total_runs()} run(s) at most")
    for line, m in zip(_search_lines(plan), plan.methods):
        _print(console, line)
        default = _default(plan, m)
        for i, p in enumerate(plan.points[m]):
            _print(console, f"    trial {i + 1}: {p.label(m)}{' (the defaults)' if p == default else ''}")
    console.print("dry run: nothing was trained", highlight=False)
    return 0


def execute(args: argparse.Namespace, console: Console) -> int:
    """`mtlbench tune`; exit code 1 when a method has no selection or a final run failed."""
    plan = tune_plan_from(args)
    results = results_path(args.results, must_exist=False)
    tensorboard = tensorboard_dir(args)
    head = (
        f"mtlbench tune: {', '.join(plan.methods)}: {plan.trials} trial(s) each on seed {plan.trial_seed}, "
        f"selected on validation mean AUROC, then × seeds {args.seeds}"
    )
    if args.dry_run:
        return _dry_run(plan, head, args, console)
    # torch from here on
    from mtlbench.plan import protocol_warnings
    from mtlbench.progress import SweepDisplay
    from mtlbench.sweep_table import summary_table
    from mtlbench.training import resolve_runtime
    from mtlbench.tune import run_tune

    base = plan.base
    resolved = resolve_runtime(base)
    _print(
        console,
        f"{head} on {base.dataset} (preset {args.preset}, {base.epochs} epochs, {base.image_size} px; "
        f"{resolved.device}, {resolved.precision}{', compiled' if base.compile else ''}): "
        f"{plan.total_runs()} run(s) → {results}",
    )
    for line in _search_lines(plan):
        _print(console, line)
    for line in protocol_warnings(base, plan.methods, plan.method_params):
        console.print(f"[yellow]warning: {line}[/yellow]", soft_wrap=True, highlight=False)
    with sigterm_as_interrupt(), interrupted_means(INTERRUPTED):
        with SweepDisplay(console, plan.total_runs(), enabled=not args.quiet) as display:
            outcome = run_tune(plan, results, display, tensorboard)
    for m in plan.methods:
        if m in outcome.selections:
            sel = outcome.selections[m]
            _print(
                console,
                f"{m}: selected trial {sel.trial + 1}/{len(plan.points[m])} ({sel.point.label(m)}), "
                f"validation mean AUROC {sel.val_auroc:.4f}, the best of {sel.scored} scored trial(s)",
            )
        else:
            colour = "yellow" if m in outcome.waiting else "red"
            console.print(f"[{colour}]{m}: {outcome.unselected[m]}[/{colour}]", soft_wrap=True, highlight=False)
    if outcome.finals:
        console.print(summary_table(results, outcome.finals))
    everything = outcome.trials + outcome.finals
    skipped = sum(o.status == "skipped" for o in everything)
    if skipped:
        console.print(f"{skipped} run(s) were already complete in {results} and were not rerun.", highlight=False)
    print_notes(everything, console)
    trial_ids = {o.run_id for o in outcome.trials}
    for o in everything:
        if o.status in FAILED_STATUSES:
            what = "trial" if o.run_id in trial_ids else "run"
            colour = "red" if o.status == "failed" or what == "run" else "yellow"
            console.print(
                f"[{colour}]{o.method} seed {o.seed} ({what}): {o.status}[/{colour}] — {o.detail}", highlight=False
            )
    console.print(
        "`mtlbench report` shows each method at its selected configuration; the trials appear in its "
        "Tuning section with their validation AUROC only.",
        highlight=False,
    )
    bad_finals = any(o.status in FAILED_STATUSES for o in outcome.finals)
    return 1 if bad_finals or set(outcome.unselected) - outcome.waiting else 0
