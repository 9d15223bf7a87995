"""What a cxr14-synth test split of a given size buys and costs, for candidate --synth-test-images.

    python benchmarks/synth_test_split.py --sizes 80,2000,10000,12000,15000 --train 1600 --image-size 32 \
        [--seeds 10] [--eval-limit N] [--out FILE]

Per size, from the NIH label table alone (no rendering): the task with the fewest test positives
and its count for --data-seed 0, and that minimum over data seeds 0 … seeds-1. Then, on this
machine, for --data-seed 0: seconds to generate the dataset (--train train/val images plus the
test images, PNGs written), to build its image cache, to evaluate the test split once with an
untrained ResNet18 as a run does (eval batch 256, fp32, CPU), and to run the report's paired
bootstrap (1,000 resamples, one method against EW, one seed) on that many images. Generation and
cache cover the whole dataset, so the difference between two rows is what the larger test split
adds. Each time is wall-clock with the process's CPU time beside it (the machine may be shared).
`--eval-limit N` evaluates only the first N test images and scales the time linearly (for large
image sizes); the row says so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench_common import device_label, emit
from mtlbench.config import build_config
from mtlbench.datasets.base import DataRequest, Split, no_progress
from mtlbench.datasets.cxr14_synth import loader, nih_sample, writer
from mtlbench.datasets.nih_layout import parse_finding_labels
from mtlbench.datasets.nih_tables import read_nih_table
from mtlbench.batches import DeviceSplit
from mtlbench.report.resampled import run_metrics
from mtlbench.report.stats import Resampling
from mtlbench.tasks import TASK_NAMES
from mtlbench.training.evaluation import evaluate
from mtlbench.training.factories import build_model

HEADER = [
    "| test images | fewest test positives, data seed 0 | fewest over data seeds (min / median) "
    "| generate s (CPU s) | cache s (CPU s) | test evaluation s (CPU s) | report bootstrap s |",
    "|---:|---|---:|---:|---:|---:|---:|",
]


def timed(fn, *args):
    """(result, wall seconds, process CPU seconds) of fn(*args)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def fewest_positives(table, labels: np.ndarray, train: int, test: int, seed: int) -> tuple[str, int]:
    """The task with the fewest positives in the test split of (train, test, seed), and the count."""
    sample = nih_sample.sample_split(train, test, seed, table)
    rows = table.index[table["Image Index"].isin(sample.test)]
    counts = labels[rows].sum(axis=0)
    return TASK_NAMES[int(counts.argmin())], int(counts.min())


def eval_seconds(test: Split, image_size: int, limit: int | None) -> tuple[float, float, int]:
    """(wall s, CPU s, images evaluated) of one test evaluation as a run does it, untrained model."""
    config = replace(build_config("quick"), image_size=image_size, device="cpu", precision="fp32")
    device = torch.device("cpu")
    model = build_model(config, len(TASK_NAMES), device)
    split = DeviceSplit.from_split(test, device)
    if limit is not None and limit < len(split):
        split = replace(split, rows=split.rows[:limit], labels=split.labels[:limit])
    warm = replace(split, rows=split.rows[:64], labels=split.labels[:64])
    evaluate(model, warm, config, device)
    _, wall, cpu = timed(evaluate, model, split, config, device)
    return wall, cpu, len(split)


def bootstrap_seconds(labels: np.ndarray) -> float:
    """Seconds the report spends on one run's metrics over 1,000 resamples (each image its own patient here)."""
    rng = np.random.default_rng(0)
    design = Resampling.of(np.arange(len(labels)), (0,), 1000)
    _, wall, _ = timed(run_metrics, labels, rng.random(labels.shape), None, design)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="80,2000,10000,12000,15000", help="candidate test sizes, comma-separated")
    parser.add_argument("--train", type=int, default=1600, help="train/val images (--synth-images)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=10, help="data seeds for the spread of the fewest positives")
    parser.add_argument("--eval-limit", type=int, help="evaluate at most this many test images and scale")
    parser.add_argument("--no-timing", action="store_true", help="positive counts only")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    table = read_nih_table()
    labels = parse_finding_labels(table["Finding Labels"], "table")
    lines = [f"train/val {args.train:,} images, {args.image_size} px; {device_label(torch.device('cpu'))}", "", *HEADER]
    for size in sizes:
        task, count = fewest_positives(table, labels, args.train, size, 0)
        spread = [fewest_positives(table, labels, args.train, size, s)[1] for s in range(args.seeds)]
        cells = [f"{size:,}", f"{task} {count}", f"{min(spread)} / {statistics.median(spread):g}"]
        if args.no_timing:
            cells += ["–"] * 4
        else:
            with tempfile.TemporaryDirectory(prefix="synth-test-bench-") as tmp:
                request = DataRequest(
                    data_dir=Path(tmp), image_size=args.image_size, synth_images=args.train, synth_test_images=size
                )
                root = loader.dataset_root(request)
                _, gen_wall, gen_cpu = timed(
                    writer.ensure_generated, root, args.train, size, args.image_size, 0, no_progress
                )
                bundle, cache_wall, cache_cpu = timed(loader.load_cxr14_synth, request, no_progress)
                ev_wall, ev_cpu, evaluated = eval_seconds(bundle.test, args.image_size, args.eval_limit)
                scale = len(bundle.test) / evaluated
                boot = bootstrap_seconds(bundle.test.labels)
            scaled = f" (first {evaluated:,}, ×{scale:.1f})" if scale != 1 else ""
            cells += [
                f"{gen_wall:.1f} ({gen_cpu:.1f})",
                f"{cache_wall:.1f} ({cache_cpu:.1f})",
                f"{ev_wall * scale:.1f} ({ev_cpu * scale:.1f}){scaled}",
                f"{boot:.1f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
