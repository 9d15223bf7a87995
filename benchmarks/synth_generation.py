"""Time cxr14-synth generation (render + PNG writes) and print one markdown table row.

    python benchmarks/synth_generation.py --count 3000 --size 64 [--header]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from mtlbench.datasets import cxr14_synth
from mtlbench.datasets.base import DataRequest, no_progress

HEADER = "| images | size px | seconds | images/s | CPU cores | machine |\n|---:|---:|---:|---:|---:|---|"


def time_generation(count: int, size: int, seed: int, data_dir: Path) -> float:
    """Seconds to generate a fresh cxr14-synth dataset of `count` images at `size` px."""
    request = DataRequest(data_dir=data_dir, image_size=size, synth_images=count, data_seed=seed)
    cxr14_synth.check_request(request)
    root = cxr14_synth.dataset_root(request)
    start = time.perf_counter()
    cxr14_synth.ensure_generated(root, count, size, seed, no_progress)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--header", action="store_true", help="print the table header first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
        seconds = time_generation(args.count, args.size, args.seed, Path(tmp))
    if args.header:
        print(HEADER)
    machine = f"{platform.machine()} {platform.processor() or platform.system()}".strip()
    print(f"| {args.count} | {args.size} | {seconds:.1f} | {args.count / seconds:.0f} | {os.cpu_count()} | {machine} |")


if __name__ == "__main__":
    main()
