"""`mtlbench export`: the results database as flat CSV tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from mtlbench.commands.options import add_results
from mtlbench.commands.outcomes import sigterm_as_interrupt
from mtlbench.errors import interrupted_means
from mtlbench.paths import readable_results

INTERRUPTED = "the export was not written (an earlier export in --out is left as it was); rerun the same command"


HELP = "write the results database as flat tables"
DESCRIPTION = "Write every table of the results database as a CSV file (one per table) into a folder."


def add_arguments(export: argparse.ArgumentParser) -> None:
    """The `export` subcommand's flags."""
    export.add_argument("--format", default="csv", choices=["csv"], help="output format (csv)")
    add_results(export, several=True)
    export.add_argument(
        "--out",
        default="results/export",
        help="output folder (default results/export): new, empty, or one an earlier export wrote "
        "(it is replaced whole); any other folder is refused, nothing is deleted",
    )


def execute(args: argparse.Namespace, console: Console) -> int:
    """`mtlbench export`: every table into a scratch folder, then swapped in whole (see mtlbench.owned)."""
    from mtlbench.owned import write_whole_folder
    from mtlbench.results.check import check_intact
    from mtlbench.results.export import export_csv
    from mtlbench.results.store import ResultsStore

    out = Path(args.out)

    def write(scratch: Path) -> list[Path]:
        with ResultsStore(path) as store:
            check_intact(store)
            return [p.relative_to(scratch) for p in export_csv(store, scratch)]

    with sigterm_as_interrupt(), interrupted_means(INTERRUPTED), readable_results(args.results) as (path, given):
        written = write_whole_folder(out, "export", given, write)
    for p in written:
        console.print(f"wrote {out / p}", highlight=False, soft_wrap=True)
    return 0
