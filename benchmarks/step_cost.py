"""Step cost of every method relative to equal weighting, measured in one process.

One training step (forward, per-task losses, the method, backward, optimizer update) on a
fixed batch already on the device, for each method and, for gradient methods, each per-task
gradient engine. Reports the median step time after warm-up, the ratio to EW, the median time
the method itself adds, and peak memory (CUDA: torch.cuda.max_memory_allocated per method; CPU:
process peak RSS, reset per method on Linux). EW is timed before and after the others; ratios
use the mean of the two, and the drift between them is printed as a noise indicator.

    python benchmarks/step_cost.py --device cpu --image-size 64 --batch-size 32 --out docs/step_cost_cpu.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
from dataclasses import replace
from pathlib import Path

import torch

from mtlbench import measure
from mtlbench.config import build_config
from mtlbench.model import ModelSpec, MultiTaskResNet
from mtlbench.registry import METHODS
from mtlbench.tasks import TASK_NAMES
from mtlbench.train import build_method, build_optimizer, resolve_device, training_step


def time_method(config, device, x, y, steps: int, warmup: int) -> dict[str, float]:
    """Median step and method time (s) and peak memory (MiB) of one method on a fixed batch."""
    torch.manual_seed(0)
    model = MultiTaskResNet(ModelSpec(len(TASK_NAMES), config.head)).to(device).train()
    method = build_method(config, TASK_NAMES).to(device)
    optimizer = build_optimizer(config, model, method)
    measure.reset_peaks(device)
    step_s, method_s = [], []
    for i in range(warmup + steps):
        t0 = measure.now(device)
        rec = training_step(model, method, optimizer, x, y, config, i, 0, device)
        t1 = measure.now(device)
        if i >= warmup:
            step_s.append(t1 - t0)
            method_s.append(rec.method_s)
    cuda = measure.peak_cuda_mb(device)
    return {
        "step_s": statistics.median(step_s),
        "method_s": statistics.median(method_s),
        "memory_mb": cuda if cuda is not None else measure.peak_rss_mb(),
    }


def main() -> None:
    """Parse arguments, time every method/engine, print (and optionally write) a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per method (after warm-up)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--methods", default="all")
    ap.add_argument("--engines", default="batched,loop")
    ap.add_argument("--out", help="also write the markdown table here")
    args = ap.parse_args()

    device = resolve_device(args.device)
    base = replace(build_config("quick"), device=device.type, image_size=args.image_size, batch_size=args.batch_size)
    names = METHODS.names() if args.methods == "all" else args.methods.split(",")
    engines = args.engines.split(",")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 1, args.image_size, args.image_size, generator=gen).to(device)
    y = (torch.rand(args.batch_size, len(TASK_NAMES), generator=gen) < 0.2).float().to(device)

    cells = [("ew", "-")]
    for name in names:
        if name == "ew":
            continue
        needs_grads = METHODS.get(name).needs != "losses"
        cells += [(name, e) for e in engines] if needs_grads else [(name, "-")]
    cells.append(("ew", "-"))

    results = []
    for name, engine in cells:
        cfg = replace(base, method=name, grad_engine=engine if engine != "-" else "batched")
        r = time_method(cfg, device, x, y, args.steps, args.warmup)
        results.append((name, engine, r))
        print(f"{name:12s} {engine:8s} step {1000 * r['step_s']:8.1f} ms  method {1000 * r['method_s']:8.1f} ms", flush=True)

    ew_first, ew_last = results[0][2]["step_s"], results[-1][2]["step_s"]
    ew = (ew_first + ew_last) / 2
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    memory_kind = "peak CUDA MiB" if device.type == "cuda" else "peak RSS MiB (process)"
    lines = [
        f"Step cost on {device_name}, torch {torch.__version__}, fp32, ResNet18, {args.image_size} px, "
        f"batch {args.batch_size}, 14 tasks; median of {args.steps} steps after {args.warmup} warm-up. "
        f"EW {1000 * ew:.1f} ms/step (first {1000 * ew_first:.1f}, last {1000 * ew_last:.1f}: drift "
        f"{100 * abs(ew_last - ew_first) / ew:.0f}%).",
        "",
        f"| method | grad engine | step (ms) | × EW | method adds (ms) | {memory_kind} |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, engine, r in results[1:-1]:
        lines.append(f"| {name} | {engine} | {1000 * r['step_s']:.1f} | {r['step_s'] / ew:.2f} | "
                     f"{1000 * r['method_s']:.1f} | {r['memory_mb']:.0f} |")
    table = "\n".join(lines)
    print()
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
