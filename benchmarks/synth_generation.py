"""Time cxr14-synth generation (render + PNG writes) and print one markdown table row.

    python benchmarks/synth_generation.py --count 2048 --size 224 --header [--test-count 50] [--repeat 3] [--split]
        [--out FILE]

`--count` train/val images and `--test-count` test images are generated; the row's "images" is
their sum. Each repeat generates a fresh dataset in a temporary folder (exactly what `mtlbench data
prepare` does); the row reports the median. `--split` also times, for the same rows, rendering
alone (the threaded render stream, no files) and writing the rendered images as PNGs alone (the
generator's writer threads). `--out FILE` appends the row to FILE, with the header when FILE is
new, so several invocations build one table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mtlbench.datasets.base import DataRequest, no_progress
from mtlbench.datasets.cxr14_synth import loader, nih_sample, noise, params, render, writer
from mtlbench.datasets.nih_layout import parse_finding_labels
from mtlbench.datasets.nih_tables import TABLE_FILE, read_nih_table

HEADER = (
    "| images | size px | seconds | images/s | render only, images/s | PNG writes only, images/s "
    "| CPU cores | machine |\n|---:|---:|---:|---:|---:|---:|---:|---|"
)


def time_generation(count: int, test_count: int, size: int, seed: int, data_dir: Path) -> float:
    """Seconds to generate a fresh cxr14-synth dataset of `count` train/val and `test_count` test
    images at `size` px."""
    request = DataRequest(
        data_dir=data_dir, image_size=size, synth_images=count, synth_test_images=test_count, data_seed=seed
    )
    loader.check_request(request)
    root = loader.dataset_root(request)
    start = time.perf_counter()
    writer.ensure_generated(root, count, test_count, size, seed, no_progress)
    return time.perf_counter() - start


def time_render(count: int, test_count: int, size: int, seed: int) -> tuple[float, np.ndarray]:
    """(seconds, images): the generator's threaded render stream for its rows, without files."""
    table = read_nih_table(TABLE_FILE)
    rows = nih_sample.sample_split(count, test_count, seed, table).rows
    labels = parse_finding_labels(rows["Finding Labels"], TABLE_FILE)
    full_prevalence = noise.prevalence(parse_finding_labels(table["Finding Labels"], TABLE_FILE))
    rendered = noise.render_labels(
        labels, rows["Image Index"], seed, full_prevalence, noise.nih_noise_rates(full_prevalence)
    )
    boxes = nih_sample.read_nih_boxes()
    images = np.empty((len(rows), size, size), dtype=np.uint8)
    start = time.perf_counter()
    for first, stop, chunk in render.render_stream(
        rows, rendered, render.Look(size, seed, params.FINDING_STRENGTH, boxes)
    ):
        images[first:stop] = chunk
    return time.perf_counter() - start, images


def time_writes(images: np.ndarray, folder: Path) -> float:
    """Seconds to write `images` as PNG files with the generator's writer threads."""
    paths = [folder / f"{i:08d}.png" for i in range(len(images))]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=writer.WRITE_THREADS) as pool:
        list(pool.map(writer.write_png, paths, images))
    return time.perf_counter() - start


def usable_cores() -> int:
    """CPU cores this process may run on (honours taskset), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def median_rate(count: int, seconds: list[float]) -> float:
    return count / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="train/val images")
    parser.add_argument("--test-count", type=int, default=50, help="test images")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the row shows the median")
    parser.add_argument("--split", action="store_true", help="also time rendering alone and PNG writes alone")
    parser.add_argument("--header", action="store_true", help="print the table header first")
    parser.add_argument("--out", help="append the row to this markdown file (header first when the file is new)")
    args = parser.parse_args()
    generation, rendering, write = [], [], []
    total = args.count + args.test_count
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
            generation.append(time_generation(args.count, args.test_count, args.size, args.seed, Path(tmp)))
        if args.split:
            seconds, images = time_render(args.count, args.test_count, args.size, args.seed)
            rendering.append(seconds)
            with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
                write.append(time_writes(images, Path(tmp)))
    runs = ", ".join(f"{total / s:.0f}" for s in generation)
    print(f"generation images/s per run: {runs}", file=sys.stderr)
    if args.split:
        print(f"render only images/s per run: {', '.join(f'{total / s:.0f}' for s in rendering)}", file=sys.stderr)
        print(f"PNG writes only images/s per run: {', '.join(f'{total / s:.0f}' for s in write)}", file=sys.stderr)
    machine = f"{platform.machine()} {platform.processor() or platform.system()}".strip()
    split = f"{median_rate(total, rendering):.0f} | {median_rate(total, write):.0f}" if args.split else "– | –"
    row = (
        f"| {total} | {args.size} | {statistics.median(generation):.1f} | "
        f"{median_rate(total, generation):.0f} | {split} | {usable_cores()} | {machine} |"
    )
    if args.header:
        print(HEADER)
    print(row)
    if args.out:
        out = Path(args.out)
        new = not out.exists() or out.stat().st_size == 0
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write((HEADER + "\n" if new else "") + row + "\n")


if __name__ == "__main__":
    main()
