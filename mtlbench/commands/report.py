"""`mtlbench report`: tables, figures and statistics from the results database alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from mtlbench.commands.options import add_quiet, add_results
from mtlbench.commands.outcomes import sigterm_as_interrupt
from mtlbench.errors import UserError, interrupted_means
from mtlbench.paths import readable_results

INTERRUPTED = "the report was not written (an earlier report in --out is left as it was); rerun the same command"
# bootstrap resamples `report` accepts: below 100 a 95% percentile interval rests on a handful of
# resamples; above 10,000 the interval and p no longer move, while the cost grows linearly (about
# 2 minutes per 1,000 resamples per method and seed on NIH's 22,433 test images, 2 CPU cores)
RESAMPLES = (100, 10_000)


HELP = "tables, figures and statistics from the results database"
DESCRIPTION = (
    "Render report.md, report.html, tables/*.csv|tex and figures/*.png|svg "
    "from the results database alone (it never trains)."
)


def add_arguments(report: argparse.ArgumentParser) -> None:
    """The `report` subcommand's flags."""
    add_results(report, several=True)
    report.add_argument(
        "--out",
        default="reports/latest",
        help="output folder (default reports/latest): new, empty, or one an earlier report wrote "
        "(it is replaced whole); any other folder is refused, nothing is deleted",
    )
    report.add_argument("--dataset", help="only runs on this dataset")
    report.add_argument(
        "--methods", help="only these methods, e.g. ew,deepchest,pcgrad (the reference is always included)"
    )
    report.add_argument(
        "--reference",
        default="ew",
        metavar="METHOD",
        help="the method the paired ΔAUROC tests, Δm%% and the step-time ratio compare against "
        "(default ew); the database must hold finished runs of it",
    )
    report.add_argument(
        "--resamples",
        type=int,
        default=1000,
        help=f"bootstrap resamples, {RESAMPLES[0]:,} to {RESAMPLES[1]:,} (default 1,000)",
    )
    report.add_argument(
        "--min-positives",
        type=int,
        default=20,
        metavar="N",
        help="means over tasks leave out tasks with fewer than N positives in the test split "
        "(listed under every table; default 20)",
    )
    add_quiet(report)


def execute(args: argparse.Namespace, console: Console) -> int:
    """`mtlbench report`: render into a scratch folder, then swap it in whole (see mtlbench.owned)."""
    from mtlbench.owned import write_whole_folder
    from mtlbench.progress import DataDisplay
    from mtlbench.report import render

    if not RESAMPLES[0] <= args.resamples <= RESAMPLES[1]:
        raise UserError(
            f"--resamples must be between {RESAMPLES[0]:,} and {RESAMPLES[1]:,}, got {args.resamples:,} "
            "(the default 1,000 suits most reports)"
        )
    if args.min_positives < 1:
        raise UserError(f"--min-positives must be at least 1, got {args.min_positives}")
    out = Path(args.out)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None

    def write(scratch: Path) -> list[Path]:
        with DataDisplay(console, enabled=not args.quiet) as display:
            files = render.write_report(
                results, scratch, args.dataset, methods, display, args.resamples, args.reference, args.min_positives
            )
        return [f.relative_to(scratch) for f in files]

    with sigterm_as_interrupt(), interrupted_means(INTERRUPTED), readable_results(args.results) as (results, given):
        files = write_whole_folder(out, "report", given, write)
    for f in files:
        console.print(f"wrote {out / f}", highlight=False, soft_wrap=True)
    return 0
