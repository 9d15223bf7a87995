"""The `mtlbench` command: run | tune | report | data | list | export.

Torch-heavy modules are imported inside the commands, after every check that needs no torch
(arguments, settings, methods, seeds, hyperparameters): a wrong input is one line at once.
"""

from __future__ import annotations

import argparse
import signal
import sys
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from rich.console import Console

from mtlbench import __version__
from mtlbench.config import (CHOICE_FIELDS, COMMAND_LINE, PRESET_SWEEPS, PRESETS, RunConfig, build_config, choices, load_config_file,
                             preset_sweep)
from mtlbench.errors import UserError, interrupted_means, interrupted_message
from mtlbench.paths import results_path

if TYPE_CHECKING:
    from mtlbench.plan import SweepPlan
    from mtlbench.tuning import TunePlan

DEFAULT_RESULTS = "results/mtlbench.sqlite"
FAILED_STATUSES = ("failed", "diverged", "oom")  # any of these in a sweep: exit code 1
# what `mtlbench: interrupted; …` says, per command (a sweep's data phase says sweep.DATA_INTERRUPTED)
INTERRUPTED = {
    "run": "the current run is stored as interrupted and resumes from its last checkpoint when you rerun the "
           "same command",
    "tune": "the current run is stored as interrupted; rerun the same command: finished trials and runs are kept, "
            "the interrupted one resumes from its last checkpoint",
    "report": "the report was not written (an earlier report in --out is left as it was); rerun the same command",
    "export": "the export was not written (an earlier export in --out is left as it was); rerun the same command",
    "prepare": "the data generation was not finished; rerun the same command to finish it (a partly built image "
               "cache resumes where it stopped)",
    "verify": "the check of the data was not finished; rerun the same command",
}
# bootstrap resamples `report` accepts: below 100 a 95% percentile interval rests on a handful of
# resamples; above 10,000 the interval and p no longer move, while the cost grows linearly (about
# 2 minutes per 1,000 resamples per method and seed on NIH's 22,433 test images, 2 CPU cores)
RESAMPLES = (100, 10_000)

# command-line flag → RunConfig field, for the options `run` exposes directly
RUN_OPTIONS: dict[str, tuple[str, type, str]] = {
    "--epochs": ("epochs", int, "training epochs"),
    "--batch-size": ("batch_size", int, "training batch size"),
    "--lr": ("lr", float, "learning rate"),
    "--optimizer": ("optimizer", str, "optimizer of the model"),
    "--weight-decay": ("weight_decay", float, "weight decay"),
    "--schedule": ("schedule", str, "learning-rate schedule (cosine decay to 0, or constant)"),
    "--head": ("head", str, "task heads: bce = one logit per task, ce2 = a 2-class softmax per task"),
    "--augment": ("augment", str, "light = rotation ±10°, scale, shift on the device; paper = rotation 30°, resized crop, "
                                  "flip"),
    "--pretrained": ("pretrained", str, "trunk initialisation"),
    "--select": ("select", str, "model selection on validation"),
    "--grad-engine": ("grad_engine", str, "per-task gradients: auto = the measured faster one (batched on CUDA for "
                                          "feature/last-layer methods, loop otherwise), batched = one vectorized "
                                          "backward, loop = T backwards"),
    "--device": ("device", str, "where to train (auto = cuda when there is one)"),
    "--precision": ("precision", str, "auto = bf16 on CUDA, fp32 on CPU; tf32 on CUDA only; bf16 = autocast; "
                                      "recorded: runs of different precision are never merged"),
}

# options that say which data to use: shared by `run` and `data prepare|verify`
DATA_OPTIONS: dict[str, tuple[str, type, str]] = {
    "--dataset": ("dataset", str, "dataset name (default cxr14-synth; see `mtlbench list`)"),
    "--image-size": ("image_size", int, "square image size in pixels"),
    "--data-dir": ("data_dir", str, "root of the dataset: the NIH download folder, the folder of chestmnist*.npz, "
                                    "or where cxr14-synth is generated (default data)"),
    "--cache-dir": ("cache_dir", str, "where preprocessed image caches go (default <data-dir>/mtlbench-cache)"),
    "--synth-images": ("synth_images", int, "number of synthetic train + val images (cxr14-synth)"),
    "--synth-test-images": ("synth_test_images", int, "number of synthetic test images, drawn from other patients "
                                                      "than train + val; independent of --synth-images (cxr14-synth; "
                                                      + ", ".join(f"{name} {p['synth_test_images']:,}"
                                                                  for name, p in PRESETS.items()) + ")"),
    "--data-seed": ("data_seed", int, "seed of the dataset (generation and validation split)"),
    "--val-fraction": ("val_fraction", float, "fraction of train_val patients used for validation (nih-cxr14, cxr14-synth)"),
    "--views": ("views", str, "which X-ray views (nih-cxr14, cxr14-synth)"),
}
DATA_SWITCHES: dict[str, tuple[str, str]] = {
    "--allow-missing": ("allow_missing", "train on the images present when listed images are missing or unreadable "
                                         "(counts are stored with each run)"),
    "--download": ("download", "let medmnist download the ChestMNIST file into --data-dir"),
}
RUN_SWITCHES: dict[str, tuple[str, str]] = {
    "--hflip": ("hflip", "random horizontal flips (off by default: the heart's side carries meaning)"),
    "--compile": ("compile", "torch.compile the model (loss-weighting methods only; the first steps of each run "
                             "pay the compilation)"),
    "--deterministic": ("deterministic", "deterministic kernels on CUDA where PyTorch has them, cuDNN autotuning "
                                         "off (slower; recorded with each run; see README, Determinism)"),
    "--freeze-trunk": ("freeze_trunk", "linear probe: keep the ResNet18 trunk fixed and train only the task heads "
                                       "(loss-weighting methods only; usually with --pretrained imagenet)"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        raise UserError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="mtlbench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"mtlbench {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = sub.add_parser("run", help="train methods × seeds and store the results",
                         description="Train each method × seed on one dataset and store results in SQLite. "
                                     "With no options: all methods, cxr14-synth, the quick preset, seed 0.")
    run.add_argument("--methods", help="'all' or a comma list, e.g. ew,deepchest (default: all; the lite preset's "
                                       "own list)")
    run.add_argument("--seeds", help="e.g. 0 or 0,1,2 or 0-4 (default 0; the lite preset: 0,1,2)")
    run.add_argument("--preset", default="quick", help=f"{' | '.join(PRESETS)} (default quick)")
    run.add_argument("--config", help="JSON file of settings (RunConfig fields), applied after the preset")
    _add_options(run, {**DATA_OPTIONS, **RUN_OPTIONS}, {**DATA_SWITCHES, **RUN_SWITCHES})
    run.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE",
                     help="a method hyperparameter, e.g. deepchest.signal=val-accuracy (repeatable)")
    run.add_argument("--results", default=DEFAULT_RESULTS, help=f"SQLite results file (default {DEFAULT_RESULTS})")
    run.add_argument("--force", action="store_true",
                     help="rerun cells that already have a result (complete, diverged or out of memory)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")

    tune = sub.add_parser(
        "tune", help="tune every method with the same budget, select on validation, run the selection × seeds",
        description="Equal-budget tuning. Per method: --trials configurations from its declared search space "
                    "(the learning rate and weight decay, the same grid for every method, and the method's own "
                    "hyperparameters; the whole grid when it has no more points, else the defaults and seeded "
                    "random draws), each trained with --trial-seed; the trial with the best validation mean AUROC "
                    "(at its selected epoch; the test split is never read) is selected and run with every seed of "
                    "--seeds. Every trial and run is an ordinary cell of the results database: rerun the same "
                    "command to resume, several processes may share it. A setting given on the command line "
                    "(--lr, --weight-decay, --param METHOD.NAME=VALUE, or in --config) is fixed, not searched.")
    tune.add_argument("--methods", default="all", help="'all' or a comma list, e.g. ew,deepchest")
    tune.add_argument("--trials", type=int, required=True, metavar="N",
                      help="configurations tried per method (the same budget for every method)")
    tune.add_argument("--seeds", default="0,1,2", help="seeds of the selected configuration's runs (default 0,1,2)")
    tune.add_argument("--trial-seed", type=int, default=None, metavar="SEED",
                      help="seed of every trial and of the random draw of configurations (default 1000: apart from "
                           "--seeds, so that no reported test number comes from the run that won the selection)")
    tune.add_argument("--preset", default="quick", help=f"{' | '.join(PRESETS)} (default quick)")
    tune.add_argument("--config", help="JSON file of settings (RunConfig fields), applied after the preset")
    _add_options(tune, {**DATA_OPTIONS, **RUN_OPTIONS}, {**DATA_SWITCHES, **RUN_SWITCHES})
    tune.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE",
                      help="fix a method hyperparameter (it is then not searched), e.g. deepchest.signal=val-accuracy")
    tune.add_argument("--results", default=DEFAULT_RESULTS, help=f"SQLite results file (default {DEFAULT_RESULTS})")
    tune.add_argument("--dry-run", action="store_true",
                      help="print each method's search space and trials, train nothing")
    tune.add_argument("--quiet", action="store_true", help="no progress bars")

    report = sub.add_parser("report", help="tables, figures and statistics from the results database",
                            description="Render report.md, report.html, tables/*.csv|tex and figures/*.png|svg "
                                        "from the results database alone (it never trains).")
    report.add_argument("--results", default=DEFAULT_RESULTS, help=f"SQLite results file (default {DEFAULT_RESULTS})")
    report.add_argument("--out", default="reports/latest",
                        help="output folder (default reports/latest): new, empty, or one an earlier report wrote "
                             "(it is replaced whole); any other folder is refused, nothing is deleted")
    report.add_argument("--dataset", help="only runs on this dataset")
    report.add_argument("--methods", help="only these methods, e.g. ew,deepchest,pcgrad (the reference is always "
                                           "included)")
    report.add_argument("--reference", default="ew", metavar="METHOD",
                        help="the method the paired ΔAUROC tests, Δm%% and the step-time ratio compare against "
                             "(default ew); the database must hold finished runs of it")
    report.add_argument("--resamples", type=int, default=1000,
                        help=f"bootstrap resamples, {RESAMPLES[0]:,} to {RESAMPLES[1]:,} (default 1,000)")
    report.add_argument("--min-positives", type=int, default=20, metavar="N",
                        help="means over tasks leave out tasks with fewer than N positives in the test split "
                             "(listed under every table; default 20)")
    report.add_argument("--quiet", action="store_true", help="no progress bar")

    data = sub.add_parser("data", help="build or check a dataset's preprocessed image cache",
                          description="`prepare` decodes every image once into the cache a run would build on "
                                      "first use; `verify` checks a cache against the files and prints per-split "
                                      "label prevalence. Options mean what they mean for `mtlbench run`.")
    data_sub = data.add_subparsers(dest="action", parser_class=_Parser, required=True)
    for action, helptext in (("prepare", "build (or finish) the image cache"),
                             ("verify", "check the cache: counts, fingerprint, pixels of a sample; print prevalence")):
        p = data_sub.add_parser(action, help=helptext)
        p.add_argument("--preset", default="quick", help=f"{' | '.join(PRESETS)} (its image size and data; default quick)")
        p.add_argument("--config", help="JSON file of settings (RunConfig fields), applied after the preset")
        _add_options(p, DATA_OPTIONS, DATA_SWITCHES)
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if action == "verify":
            p.add_argument("--sample", type=int, default=64, help="images re-decoded and compared (default 64)")

    sub.add_parser("list", help="methods (with hyperparameters), datasets and presets")

    export = sub.add_parser("export", help="write the results database as flat tables")
    export.add_argument("--format", default="csv", choices=["csv"], help="output format (csv)")
    export.add_argument("--results", default=DEFAULT_RESULTS, help="SQLite results file")
    export.add_argument("--out", default="results/export",
                        help="output folder (default results/export): new, empty, or one an earlier export wrote "
                             "(it is replaced whole); any other folder is refused, nothing is deleted")
    return parser


def _add_options(
    parser: argparse.ArgumentParser, options: dict[str, tuple[str, type, str]], switches: dict[str, tuple[str, str]]
) -> None:
    for flag, (field_name, typ, helptext) in options.items():
        if field_name in CHOICE_FIELDS:  # the valid values from the config's type, not written out here
            helptext = f"{helptext}; one of: {' | '.join(choices(field_name))}" if helptext else \
                " | ".join(choices(field_name))
        parser.add_argument(flag, type=typ, default=None, help=helptext)
    for flag, (_, helptext) in switches.items():
        parser.add_argument(flag, action="store_const", const=True, default=None, help=helptext)


def _config_from(args: argparse.Namespace, options: dict[str, tuple], switches: dict[str, tuple]) -> RunConfig:
    """Preset ← config file ← the options given on the command line."""
    layers = [(load_config_file(args.config), f"config file {args.config}")] if args.config else []
    given = {spec[0]: getattr(args, flag[2:].replace("-", "_")) for flag, spec in {**options, **switches}.items()}
    layers.append(({k: v for k, v in given.items() if v is not None}, COMMAND_LINE))
    return build_config(args.preset, layers)


def plan_from(args: argparse.Namespace) -> "SweepPlan":
    """The sweep `run` asks for, every setting, method, seed and hyperparameter checked (no torch)."""
    from mtlbench.hyperparams import parse_method_params
    from mtlbench.plan import SweepPlan, check_cell_count, check_methods_fit, parse_methods, parse_seeds

    base = _config_from(args, {**DATA_OPTIONS, **RUN_OPTIONS}, {**DATA_SWITCHES, **RUN_SWITCHES})
    args.methods, args.seeds = preset_sweep(args.preset, args.methods, args.seeds)
    methods = parse_methods(args.methods)
    seeds = parse_seeds(args.seeds)
    check_cell_count(methods, seeds)
    params = parse_method_params(args.param, methods)
    check_methods_fit(base, methods)
    return SweepPlan(base, methods, seeds, params)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """`mtlbench run`."""
    plan = plan_from(args)
    results = results_path(args.results, must_exist=False)
    # torch from here on
    from mtlbench.progress import SweepDisplay
    from mtlbench.summary import summary_table
    from mtlbench.sweep import run_sweep
    from mtlbench.training import resolve_runtime

    base, methods = plan.base, plan.methods
    resolved = resolve_runtime(base)
    console.print(f"mtlbench run: {len(plan.cells())} run(s): {', '.join(methods)} × seeds {args.seeds} "
                  f"on {base.dataset} (preset {args.preset}, {base.epochs} epochs, {base.image_size} px; "
                  f"{resolved.device}, {resolved.precision}{', compiled' if base.compile else ''}) "
                  f"→ {results}", soft_wrap=True, highlight=False)
    with _sigterm_as_interrupt(), interrupted_means(INTERRUPTED["run"]):
        with SweepDisplay(console, len(plan.cells()), enabled=not args.quiet) as display:
            outcomes = run_sweep(plan, results, display, force=args.force)
    console.print(summary_table(results, outcomes))
    skipped = sum(o.status == "skipped" for o in outcomes)
    if skipped:
        console.print(f"{skipped} run(s) were already complete in {results} and were not rerun (--force reruns them).")
    for o in outcomes:
        if o.note:
            console.print(f"[yellow]{o.method} seed {o.seed}: {o.note}[/yellow]", highlight=False)
        if o.status == "busy":
            console.print(f"[yellow]{o.method} seed {o.seed}: left to the process that is running it[/yellow]",
                          highlight=False)
    bad = [o for o in outcomes if o.status in FAILED_STATUSES]
    for o in bad:
        console.print(f"[red]{o.method} seed {o.seed}: {o.status}[/red] — {o.detail}", highlight=False)
    return 1 if bad else 0


def tune_plan_from(args: argparse.Namespace) -> "TunePlan":
    """The tuning `tune` asks for, every setting, method, seed, hyperparameter and space checked (no torch)."""
    from mtlbench.hyperparams import parse_method_params
    from mtlbench.plan import MAX_CELLS, check_methods_fit, parse_methods, parse_seeds
    from mtlbench.tuning import SHARED_SPACE, TRIAL_SEED, plan_tune

    if not 1 <= args.trials <= MAX_CELLS:
        raise UserError(f"--trials must be between 1 and {MAX_CELLS:,}, got {args.trials}")
    base = _config_from(args, {**DATA_OPTIONS, **RUN_OPTIONS}, {**DATA_SWITCHES, **RUN_SWITCHES})
    methods = parse_methods(args.methods)
    seeds = parse_seeds(args.seeds)
    params = parse_method_params(args.param, methods)
    check_methods_fit(base, methods)
    in_file = load_config_file(args.config) if args.config else {}
    fixed = [name for name in SHARED_SPACE if getattr(args, name, None) is not None or name in in_file]
    trial_seed = TRIAL_SEED if args.trial_seed is None else args.trial_seed
    plan = plan_tune(base, methods, seeds, args.trials, trial_seed, params, fixed)
    if plan.total_runs() > MAX_CELLS:
        raise UserError(f"this tuning is {plan.total_runs():,} runs (trials and seeds × methods); one command runs at "
                        f"most {MAX_CELLS:,}: tune fewer methods per command with the same --results")
    return plan


def _search_lines(plan: "TunePlan") -> list[str]:
    """Per method: its space, and how its trials are chosen."""
    lines = []
    for m in plan.methods:
        space, n = plan.spaces[m], len(plan.points[m])
        how = (f"the whole grid ({n} trial{'s' if n != 1 else ''})" if n == space.size else
               f"{n} drawn at random (trial seed {plan.trial_seed})")
        default = "" if plan.points[m][0] != _default(plan, m) else ", the defaults first"
        lines.append(f"  {m}: {space.describe()}; {how}{default}")
    return lines


def _default(plan: "TunePlan", method: str):
    from mtlbench.tuning import default_point

    return default_point(plan.spaces[method], plan.base, plan.method_params.get(method))


def cmd_tune(args: argparse.Namespace, console: Console) -> int:
    """`mtlbench tune`."""
    plan = tune_plan_from(args)
    results = results_path(args.results, must_exist=False)
    head = (f"mtlbench tune: {', '.join(plan.methods)}: {plan.trials} trial(s) each on seed {plan.trial_seed}, "
            f"selected on validation mean AUROC, then × seeds {args.seeds}")
    if args.dry_run:
        console.print(head + f" on {plan.base.dataset} (preset {args.preset}); {plan.total_runs()} run(s) at most",
                      soft_wrap=True, highlight=False, markup=False)
        for line, m in zip(_search_lines(plan), plan.methods):
            console.print(line, soft_wrap=True, highlight=False, markup=False)
            default = _default(plan, m)
            for i, p in enumerate(plan.points[m]):
                console.print(f"    trial {i + 1}: {p.label(m)}{' (the defaults)' if p == default else ''}",
                              soft_wrap=True, highlight=False, markup=False)
        console.print("dry run: nothing was trained", highlight=False)
        return 0
    # torch from here on
    from mtlbench.progress import SweepDisplay
    from mtlbench.summary import summary_table
    from mtlbench.training import resolve_runtime
    from mtlbench.tune import run_tune

    base = plan.base
    resolved = resolve_runtime(base)
    console.print(f"{head} on {base.dataset} (preset {args.preset}, {base.epochs} epochs, {base.image_size} px; "
                  f"{resolved.device}, {resolved.precision}{', compiled' if base.compile else ''}): "
                  f"{plan.total_runs()} run(s) → {results}", soft_wrap=True, highlight=False, markup=False)
    for line in _search_lines(plan):
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    with _sigterm_as_interrupt(), interrupted_means(INTERRUPTED["tune"]):
        with SweepDisplay(console, plan.total_runs(), enabled=not args.quiet) as display:
            outcome = run_tune(plan, results, display)
    for m in plan.methods:
        if m in outcome.selections:
            sel = outcome.selections[m]
            console.print(f"{m}: selected trial {sel.trial + 1}/{len(plan.points[m])} ({sel.point.label(m)}), "
                          f"validation mean AUROC {sel.val_auroc:.4f}, the best of {sel.scored} scored trial(s)",
                          soft_wrap=True, highlight=False, markup=False)
        else:
            colour = "yellow" if m in outcome.waiting else "red"
            console.print(f"[{colour}]{m}: {outcome.unselected[m]}[/{colour}]", soft_wrap=True, highlight=False)
    if outcome.finals:
        console.print(summary_table(results, outcome.finals))
    everything = outcome.trials + outcome.finals
    skipped = sum(o.status == "skipped" for o in everything)
    if skipped:
        console.print(f"{skipped} run(s) were already complete in {results} and were not rerun.", highlight=False)
    for o in everything:
        if o.note:
            console.print(f"[yellow]{o.method} seed {o.seed}: {o.note}[/yellow]", highlight=False)
        if o.status == "busy":
            console.print(f"[yellow]{o.method} seed {o.seed}: left to the process that is running it[/yellow]",
                          highlight=False)
    trial_ids = {o.run_id for o in outcome.trials}
    for o in everything:
        if o.status in FAILED_STATUSES:
            what = "trial" if o.run_id in trial_ids else "run"
            colour = "red" if o.status == "failed" or what == "run" else "yellow"
            console.print(f"[{colour}]{o.method} seed {o.seed} ({what}): {o.status}[/{colour}] — {o.detail}",
                          highlight=False)
    console.print("`mtlbench report` shows each method at its selected configuration; the trials appear in its "
                  "Tuning section with their validation AUROC only.", highlight=False)
    bad_finals = any(o.status in FAILED_STATUSES for o in outcome.finals)
    return 1 if bad_finals or set(outcome.unselected) - outcome.waiting else 0


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler preempting the job): handled like Ctrl-C, the run is marked interrupted."""


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise Terminated(signum)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM (a scheduler's preemption) raises Terminated, handled like Ctrl-C."""
    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    """`mtlbench report`: render into a scratch folder, then swap it in whole (see mtlbench.owned)."""
    from mtlbench.owned import write_whole_folder
    from mtlbench.progress import DataDisplay
    from mtlbench.report import render

    if not RESAMPLES[0] <= args.resamples <= RESAMPLES[1]:
        raise UserError(f"--resamples must be between {RESAMPLES[0]:,} and {RESAMPLES[1]:,}, got {args.resamples:,} "
                        "(the default 1,000 suits most reports)")
    if args.min_positives < 1:
        raise UserError(f"--min-positives must be at least 1, got {args.min_positives}")
    out, results = Path(args.out), results_path(args.results, must_exist=True)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None

    def write(scratch: Path) -> list[Path]:
        with DataDisplay(console, enabled=not args.quiet) as display:
            files = render.write_report(results, scratch, args.dataset, methods, display, args.resamples,
                                        args.reference, args.min_positives)
        return [f.relative_to(scratch) for f in files]

    with _sigterm_as_interrupt(), interrupted_means(INTERRUPTED["report"]):
        files = write_whole_folder(out, "report", [results], write)
    for f in files:
        console.print(f"wrote {out / f}", highlight=False, soft_wrap=True)
    return 0


def cmd_data(args: argparse.Namespace, console: Console) -> int:
    """`mtlbench data prepare|verify`."""
    config = _config_from(args, DATA_OPTIONS, DATA_SWITCHES)  # checked before torch is imported
    from mtlbench.data_commands import prepare, verify

    with interrupted_means(INTERRUPTED[args.action]):
        if args.action == "prepare":
            return prepare(config, console, quiet=args.quiet)
        return verify(config, console, sample=args.sample, quiet=args.quiet)


def cmd_list(console: Console) -> int:
    """`mtlbench list`: methods with kind, description and hyperparameter defaults; datasets; presets."""
    from mtlbench.registry import DATASETS, METHODS

    console.print("[bold]methods[/bold]")
    for name in METHODS.names():
        cls = METHODS.get(name)
        kind = cls.space().description
        console.print(f"  [bold]{name}[/bold]  ({kind}; weights: {cls.weight_scale})  {cls.description}",
                      soft_wrap=True, highlight=False)
        params = fields(cls.Params)
        for f in params:  # a field's metadata "note" (methods/params.py) follows its default
            note = f"  # {f.metadata['note']}" if f.metadata.get("note") else ""
            console.print(f"      {f.name} = {f.default!r}{note}", soft_wrap=True, highlight=False, markup=False)
        if not params:
            console.print("      (no hyperparameters)")
    from mtlbench.plugins import scan_plugins

    for name, problem in scan_plugins().problems.items():
        console.print(f"  [bold]{name}[/bold]  (installed plugin, not usable) {problem}", soft_wrap=True,
                      highlight=False, markup=False)
    console.print("[bold]datasets[/bold]: " + ", ".join(DATASETS.names()), soft_wrap=True)
    console.print("[bold]presets[/bold]")
    for n, p in PRESETS.items():
        sweep = PRESET_SWEEPS.get(n, {})
        console.print(f"  {n}: " + ", ".join(f"{k}={v}" for k, v in p.items())
                      + "".join(f"; {k} {v}" for k, v in sweep.items()), soft_wrap=True, highlight=False)
    return 0


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    """`mtlbench export`: every table into a scratch folder, then swapped in whole (see mtlbench.owned)."""
    from mtlbench.results.export import export_csv
    from mtlbench.owned import write_whole_folder
    from mtlbench.results.store import ResultsStore
    from mtlbench.results.check import check_intact

    path, out = results_path(args.results, must_exist=True), Path(args.out)

    def write(scratch: Path) -> list[Path]:
        with ResultsStore(path) as store:
            check_intact(store)
            return [p.relative_to(scratch) for p in export_csv(store, scratch)]

    with _sigterm_as_interrupt(), interrupted_means(INTERRUPTED["export"]):
        written = write_whole_folder(out, "export", [path], write)
    for p in written:
        console.print(f"wrote {out / p}", highlight=False, soft_wrap=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mtlbench` console script; returns the exit code."""
    console = Console()
    err = Console(stderr=True)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            return cmd_run(args, console)
        if args.command == "tune":
            return cmd_tune(args, console)
        if args.command == "report":
            return cmd_report(args, console)
        if args.command == "data":
            return cmd_data(args, console)
        if args.command == "list":
            return cmd_list(console)
        if args.command == "export":
            return cmd_export(args, console)
        build_parser().print_help()
        return 2
    except UserError as exc:
        err.print(f"mtlbench: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt as exc:
        err.print(interrupted_message(exc), highlight=False, markup=False, soft_wrap=True)
        return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
