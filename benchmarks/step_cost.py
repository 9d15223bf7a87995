"""Step cost of every method relative to equal weighting, measured in one process.

One training step (forward, per-task losses, the method, backward, optimizer update) on a
fixed batch already on the device, for each method and, for gradient methods, each per-task
gradient engine. Reports the median step time after warm-up, the ratio to EW, the median time
the method itself adds, and peak memory (CUDA: torch.cuda.max_memory_allocated per method; CPU:
process peak RSS, reset per method on Linux).

On a shared machine the speed drifts while the script runs, so it measures in rounds: each
round times EW, then every other cell, then EW again, and a cell's ratio for that round is its
time over the mean of the round's two EW times. The table gives the median ratio over rounds
and its range (min–max), which shows how noisy the machine was.

    python benchmarks/step_cost.py --device cpu --image-size 32 --batch-size 64 --rounds 3 --out docs/step_cost_cpu.md
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch
from bench_common import device_label, emit

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
    ap.add_argument("--rounds", type=int, default=3, help="repetitions of the whole sequence (ratios: median)")
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

    per_round: list[dict[tuple[str, str], dict[str, float]]] = []
    for r in range(args.rounds):
        timed: dict[tuple[str, str], dict[str, float]] = {}
        ew_times = []
        for i, (name, engine) in enumerate(cells):
            cfg = replace(base, method=name, grad_engine=engine if engine != "-" else "batched")
            res = time_method(cfg, device, x, y, args.steps, args.warmup)
            if name == "ew" and i in (0, len(cells) - 1):
                ew_times.append(res["step_s"])
            else:
                timed[(name, engine)] = res
            print(f"round {r + 1}/{args.rounds} {name:12s} {engine:8s} step {1000 * res['step_s']:8.1f} ms  "
                  f"method {1000 * res['method_s']:8.1f} ms", flush=True)
        ew = statistics.fmean(ew_times)
        for res in timed.values():
            res["ratio"] = res["step_s"] / ew
        timed[("ew", "-")] = {"step_s": ew, "method_s": 0.0, "ratio": 1.0, "memory_mb": float("nan")}
        per_round.append(timed)

    device_name = device_label(device)
    memory_kind = "peak CUDA MiB" if device.type == "cuda" else "peak RSS MiB (process)"
    ew_ms = [1000 * rd[("ew", "-")]["step_s"] for rd in per_round]
    lines = [
        f"Step cost on {device_name}, torch {torch.__version__}, fp32, ResNet18, {args.image_size} px, "
        f"batch {args.batch_size}, 14 tasks; per cell the median of {args.steps} steps after {args.warmup} "
        f"warm-up, in {args.rounds} round(s). EW step {statistics.median(ew_ms):.1f} ms "
        f"(rounds: {', '.join(f'{v:.1f}' for v in ew_ms)}).",
        "",
        f"| method | grad engine | step (ms) | × EW (median) | × EW (range over rounds) | method adds (ms) | {memory_kind} |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key in cells[1:-1]:
        rows = [rd[key] for rd in per_round]
        ratios = [row["ratio"] for row in rows]
        lines.append(
            f"| {key[0]} | {key[1]} | {1000 * statistics.median(row['step_s'] for row in rows):.1f} | "
            f"{statistics.median(ratios):.2f} | {min(ratios):.2f}–{max(ratios):.2f} | "
            f"{1000 * statistics.median(row['method_s'] for row in rows):.1f} | "
            f"{max(row['memory_mb'] for row in rows):.0f} |"
        )
    emit(lines, args.out)


if __name__ == "__main__":
    main()
