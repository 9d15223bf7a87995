"""`mtlbench list`: methods (kind, description, hyperparameter defaults), datasets and presets."""

from __future__ import annotations

import argparse
from dataclasses import fields

from rich.console import Console

from mtlbench.config import PRESET_SWEEPS, PRESETS


HELP = "methods (with hyperparameters), datasets and presets"
DESCRIPTION = "Every registered method with its hyperparameters, unusable plugins, method sets, datasets and presets."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `list` subcommand has no flags."""


def execute(args: argparse.Namespace, console: Console) -> int:
    """Print every registered method with its hyperparameters, unusable plugins, datasets and presets."""
    from mtlbench.plan import METHOD_SET_HELP, TORCHJD_MISSING, TORCHJD_PREFIX, method_sets
    from mtlbench.plugins import scan_plugins
    from mtlbench.registry import DATASETS, METHODS

    console.print("[bold]methods[/bold]")
    for name in METHODS.names():
        cls = METHODS.get(name)
        kind = cls.space().description
        console.print(
            f"  [bold]{name}[/bold]  ({kind}; weights: {cls.weight_scale})  {cls.description}",
            soft_wrap=True,
            highlight=False,
        )
        params = fields(cls.Params)
        for f in params:  # a field's metadata "note" (methods/params/) follows its default
            note = f"  # {f.metadata['note']}" if f.metadata.get("note") else ""
            console.print(f"      {f.name} = {f.default!r}{note}", soft_wrap=True, highlight=False, markup=False)
        if not params:
            console.print("      (no hyperparameters)")
    problems = scan_plugins().problems
    adapters = [n for n, problem in problems.items() if n.startswith(TORCHJD_PREFIX) and TORCHJD_MISSING in problem]
    if adapters:
        console.print(
            f"  {', '.join(adapters)}: torchjd's weightings, usable once the torchjd extra is installed: "
            "pip install -e '.[torchjd]'",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
    for name, problem in problems.items():
        if name not in adapters:
            console.print(
                f"  [bold]{name}[/bold]  (installed plugin, not usable) {problem}",
                soft_wrap=True,
                highlight=False,
                markup=False,
            )
    console.print("[bold]method sets[/bold] (--methods accepts them beside names, e.g. core,imtl-g)")
    sets = method_sets()
    for name, helptext in METHOD_SET_HELP.items():
        console.print(
            f"  {name} ({len(sets[name])}): {helptext}: {', '.join(sets[name])}",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
    console.print("[bold]datasets[/bold]: " + ", ".join(DATASETS.names()), soft_wrap=True)
    console.print("[bold]presets[/bold]")
    for n, p in PRESETS.items():
        sweep = PRESET_SWEEPS.get(n, {})
        console.print(
            f"  {n}: "
            + ", ".join(f"{k}={v}" for k, v in p.items())
            + "".join(f"; {k} {' '.join(v) if isinstance(v, tuple) else v}" for k, v in sweep.items()),
            soft_wrap=True,
            highlight=False,
        )
    return 0
