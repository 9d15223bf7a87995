"""The `mtlbench` command: run | tune | report | data | list | export | merge | status.

Each subcommand is a module of mtlbench.commands; this one builds the parser from them and turns
errors into exit codes: a wrong input is one line and exit code 2, an interrupt says what was kept.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Sequence

from rich.console import Console

from mtlbench import __version__
from mtlbench.commands import data, export, listing, merge, report, run, status, tune
from mtlbench.commands.options import CommandParser
from mtlbench.commands.outcomes import Terminated
from mtlbench.errors import UserError, interrupted_message

LOG_WIDTH = 200  # columns of the tables printed when stdout is not a terminal
COMMANDS = {
    "run": run,
    "tune": tune,
    "report": report,
    "data": data,
    "list": listing,
    "export": export,
    "merge": merge,
    "status": status,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = CommandParser(prog="mtlbench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"mtlbench {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=CommandParser)
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.HELP, description=command.DESCRIPTION))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mtlbench` console script; returns the exit code."""
    # Piped to a file or a CI log, rich would cut tables to 80 columns (names and numbers lost to "…")
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    console = Console(width=LOG_WIDTH if piped else None)
    err = Console(stderr=True)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return COMMANDS[args.command].execute(args, console)
    except UserError as exc:
        err.print(f"mtlbench: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt as exc:
        err.print(interrupted_message(exc), highlight=False, markup=False, soft_wrap=True)
        return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
