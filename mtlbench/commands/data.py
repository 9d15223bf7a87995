"""`mtlbench data prepare|verify`: build or check a dataset's preprocessed image cache."""

from __future__ import annotations

import argparse

from rich.console import Console

from mtlbench.commands.options import DATA_OPTIONS, DATA_SWITCHES, CommandParser, add_quiet, add_settings, config_from
from mtlbench.errors import interrupted_means

INTERRUPTED = {
    "prepare": "the data generation was not finished; rerun the same command to finish it (a partly built image "
    "cache resumes where it stopped)",
    "verify": "the check of the data was not finished; rerun the same command",
}


HELP = "build or check a dataset's preprocessed image cache"
DESCRIPTION = (
    "`prepare` decodes every image once into the cache a run would build on "
    "first use; `verify` checks a cache against the files and prints per-split "
    "label prevalence. Options mean what they mean for `mtlbench run`."
)


def add_arguments(data: argparse.ArgumentParser) -> None:
    """The `data` subcommand and its two actions' flags."""
    data_sub = data.add_subparsers(dest="action", parser_class=CommandParser, required=True)
    for action, helptext in (
        ("prepare", "build (or finish) the image cache"),
        ("verify", "check the cache: counts, fingerprint, pixels of a sample; print prevalence"),
    ):
        p = data_sub.add_parser(action, help=helptext)
        add_settings(p, DATA_OPTIONS, DATA_SWITCHES, preset_help="its image size and data; ")
        add_quiet(p)
        if action == "verify":
            p.add_argument("--sample", type=int, default=64, help="images re-decoded and compared (default 64)")


def execute(args: argparse.Namespace, console: Console) -> int:
    """`mtlbench data prepare|verify`; verify exits 1 when a sampled image differs from its cached pixels."""
    config = config_from(args, DATA_OPTIONS, DATA_SWITCHES)  # checked before torch is imported
    from mtlbench.commands.data_cache import prepare, verify

    with interrupted_means(INTERRUPTED[args.action]):
        if args.action == "prepare":
            return prepare(config, console, quiet=args.quiet)
        return verify(config, console, sample=args.sample, quiet=args.quiet)
