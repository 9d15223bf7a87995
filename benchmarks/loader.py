"""Image cache build and training-loader throughput against what a training step consumes.

Writes an NIH ChestX-ray14 download in the real layout (real names, labels and patients from
the NIH table; pixels from the cxr14-synth renderer at the source resolution, 1024 px like the
real PNGs; `--distinct` rendered images are reused across the files because rendering at 1024 px
is slow), then measures, in one process:

  1. cache build: scan + decode + area-resize of every file into the memory-mapped cache, with
     all CPU cores (`mtlbench data prepare` does exactly this), images/s;
  2. loader: the training loader (cache → uint8 batch → device → float, normalized, augmented),
     images/s over whole epochs, device-synchronized;
  3. training: the EW training step (forward, 14 losses, backward, AdamW) on a batch already on
     the device, images/s (the median step, as benchmarks/step_cost.py times it).

The target is loader ÷ training ≥ 3: the loader is never the bottleneck.

    python benchmarks/loader.py --device cpu --image-size 224 --batch-size 32 --files 512 --out docs/loader_cpu.md
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from bench_common import device_label, emit
from step_cost import time_method

from mtlbench import costs
from mtlbench.config import build_config
from mtlbench.datasets.base import DataRequest, no_progress
from mtlbench.datasets.cxr14_synth import nih_sample, render
from mtlbench.datasets.image_cache import worker_count
from mtlbench.datasets.nih_cxr14 import load_nih_cxr14
from mtlbench.datasets.nih_layout import parse_finding_labels
from mtlbench.batches import DeviceSplit, train_batches
from mtlbench.training import resolve_device


def write_download(root: Path, files: int, source_size: int, distinct: int, seed: int = 0) -> float:
    """An NIH-layout download of `files` PNGs; returns their mean size in KiB."""
    rows = nih_sample.sample_nih_rows(files, seed)
    labels = parse_finding_labels(rows["Finding Labels"], "benchmark").astype(bool)
    rendered = render.render_images(rows.iloc[:distinct], labels[:distinct], source_size, seed)
    (root / "images").mkdir(parents=True)
    names = rows["Image Index"].tolist()
    for i, name in enumerate(names):
        Image.fromarray(rendered[i % distinct], mode="L").save(root / "images" / name)
    train_val, test = nih_sample.split_test_patients(rows, seed)
    (root / "train_val_list.txt").write_text("".join(f"{n}\n" for n in train_val))
    (root / "test_list.txt").write_text("".join(f"{n}\n" for n in test))
    rows.to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    return float(np.mean([p.stat().st_size for p in (root / "images").iterdir()]) / 1024)


def loader_rate(split: DeviceSplit, batch_size: int, device: torch.device, augment: str, min_seconds: float) -> float:
    """Images/s of the training loader over whole epochs (at least `min_seconds` of them)."""
    for _batch in train_batches(split, batch_size, 1, 0, device, 0.5, 0.5, augment):  # warm-up epoch
        pass
    images, epoch = 0, 0
    start = costs.now(device)
    while True:
        for x, _ in train_batches(split, batch_size, 0, epoch, device, 0.5, 0.5, augment):
            images += x.shape[0]
        epoch += 1
        elapsed = costs.now(device) - start
        if elapsed >= min_seconds:
            return images / elapsed


def main() -> None:
    """Parse arguments, measure, print (and optionally write) a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--source-size", type=int, default=1024, help="resolution of the written PNGs (NIH: 1024)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--files", type=int, default=512)
    ap.add_argument("--distinct", type=int, default=32, help="distinct rendered images cycled over the files")
    ap.add_argument("--augment", default="light", help="loader augmentation: none | light | paper")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps (after 2 warm-up)")
    ap.add_argument("--loader-seconds", type=float, default=5.0)
    ap.add_argument("--workdir", help="where to write the download (default: a temporary folder)")
    ap.add_argument("--out", help="also write the markdown table here")
    args = ap.parse_args()
    device = resolve_device(args.device)

    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="loader-bench-"))
    root = tmp / "nih"
    try:
        started = time.perf_counter()
        kib = write_download(root, args.files, args.source_size, args.distinct)
        print(
            f"wrote {args.files} PNGs of {args.source_size} px ({kib:.0f} KiB each) in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        request = DataRequest(data_dir=root, image_size=args.image_size)
        started = time.perf_counter()
        bundle = load_nih_cxr14(request, no_progress)
        build_s = time.perf_counter() - started
        build_rate = args.files / build_s
        print(f"cache build: {build_rate:.0f} images/s", flush=True)

        split = DeviceSplit.from_split(bundle.train, device)
        load = loader_rate(split, args.batch_size, device, args.augment, args.loader_seconds)
        print(f"loader: {load:.0f} images/s", flush=True)

        config = replace(
            build_config("quick"),
            device=device.type,
            image_size=args.image_size,
            batch_size=args.batch_size,
            method="ew",
        )
        x, y = next(train_batches(split, args.batch_size, 0, 0, device, 0.5, 0.5, args.augment))
        step_s = time_method(config, device, x, y, args.steps, 2)["step_s"]
        train = args.batch_size / step_s
        print(f"training (EW step): {train:.0f} images/s", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)

    ratio = load / train
    lines = [
        f"Loader throughput on {device_label(device)}, {worker_count()} CPU cores for the cache build, torch {torch.__version__}, "
        f"fp32. {args.files} NIH-layout PNGs of {args.source_size} px ({kib:.0f} KiB mean) → cache at "
        f"{args.image_size} px; loader and training at batch {args.batch_size}, augmentation {args.augment!r}.",
        "",
        "| stage | images/s | ÷ training |",
        "|---|---:|---:|",
        f"| cache build (scan, decode, area resize, write; once per dataset and size) | {build_rate:.0f} | {build_rate / train:.2f} |",
        f"| training loader (cache → device batch, normalized, augmented) | {load:.0f} | {ratio:.2f} |",
        f"| training step, EW (forward, 14 losses, backward, AdamW) | {train:.1f} | 1.00 |",
        "",
        f"Loader ÷ training = {ratio:.1f} (target ≥ 3: {'met' if ratio >= 3 else 'NOT met'}).",
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
