"""What `mtlbench data prepare` and `mtlbench data verify` do: build and check a dataset's image cache
(imports torch and the datasets; the command's flags are in mtlbench.commands.data)."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mtlbench.config import RunConfig
from mtlbench.datasets.base import DatasetBundle, has_missing, labelled, positives
from mtlbench.progress import DataDisplay
from mtlbench.registry import DATASETS
from mtlbench.sweep import data_request


def prepare(config: RunConfig, console: Console, quiet: bool = False) -> int:
    """Load the dataset `config` asks for, building its image cache; print what it holds."""
    started = time.perf_counter()
    with DataDisplay(console, enabled=not quiet) as display:
        bundle = DATASETS.get(config.dataset)(data_request(config), display)
    seconds = time.perf_counter() - started
    _print_summary(bundle, console)
    console.print(
        f"ready in {seconds:.1f} s; `mtlbench run` with the same data options reads this cache",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def verify(config: RunConfig, console: Console, sample: int = 64, quiet: bool = False) -> int:
    """Check the cache against the current files (fingerprint, counts, a re-decoded sample); print prevalence.

    Returns 1 if any sampled image differs from its cached pixels, else 0. A missing, stale or
    incomplete cache is a UserError raised by the loader.
    """
    with DataDisplay(console, enabled=not quiet) as display:
        bundle = DATASETS.get(config.dataset)(data_request(config, build_cache=False, spot_check=sample), display)
    _print_summary(bundle, console)
    console.print(prevalence_table(bundle))
    check = bundle.info.get("spot_check", {"checked": 0, "mismatched": []})
    if check["mismatched"]:
        names = ", ".join(check["mismatched"][:5])
        console.print(
            f"[red]FAILED[/red]: {len(check['mismatched'])} of {check['checked']} sampled images differ "
            f"from the cache ({names}); rebuild with `mtlbench data prepare` after deleting {bundle.info['cache']}",
            soft_wrap=True,
            highlight=False,
        )
        return 1
    console.print(
        f"OK: fingerprint {bundle.info['cache_fingerprint']} matches the files; "
        f"{check['checked']} sampled images equal their cached pixels",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def prevalence_table(bundle: DatasetBundle) -> Table:
    """Per-task positives per split: count and percentage."""
    splits = bundle.splits()
    table = Table(title=f"{bundle.name}: label prevalence per split")
    table.add_column("finding")
    for name, split in splits.items():
        table.add_column(f"{name} (n={len(split):,})", justify="right")
    pos = {name: positives(split.labels) for name, split in splits.items()}
    counts = {name: labelled(split.labels).sum(axis=0) for name, split in splits.items()}
    missing = any(has_missing(split.labels) for split in splits.values())
    for t, task in enumerate(bundle.task_names):
        cells = [
            f"{int(pos[n][t]):,} ({100 * pos[n][t] / max(counts[n][t], 1):.2f}%)"
            + (f" of {int(counts[n][t]):,} labelled" if missing else "")
            for n in splits
        ]
        table.add_row(task, *cells)
    return table


def _print_summary(bundle: DatasetBundle, console: Console) -> None:
    info = bundle.info
    counts = ", ".join(f"{k} {len(s):,}" for k, s in bundle.splits().items())
    console.print(f"{bundle.name}: {counts} images at {info.get('image_size')} px", highlight=False, soft_wrap=True)
    for key in ("missing", "unreadable"):
        if sum(info.get(key, {}).values()):
            per = ", ".join(f"{k} {v:,}" for k, v in info[key].items())
            console.print(f"  {key} (skipped under --allow-missing): {per}", highlight=False, soft_wrap=True)
    for line in info.get("warnings", []):
        console.print(f"warning: {line}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    cache = Path(info["cache"])
    size = sum(f.stat().st_size for f in cache.iterdir() if f.is_file())
    console.print(f"  cache: {cache} ({size / 2**20:,.1f} MiB)", highlight=False, soft_wrap=True)
