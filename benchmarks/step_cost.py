"""Step cost of every method relative to equal weighting, measured in one process.

One training step (forward, per-task losses, the method, backward, optimizer update) on a
fixed batch already on the device, for each method and, for gradient methods, each per-task
gradient engine. Reports the median step time after warm-up, the ratio to EW, the median time
the method itself adds, peak memory (CUDA: torch.cuda.max_memory_allocated per method; CPU:
process peak RSS, reset per method on Linux), for gradient methods the loop engine's step time
over the batched engine's, and with `--max-batch` (CUDA only) the largest batch each method
fits on the device with the engine `--grad-engine auto` picks for it (shown on that engine's row).

Targets (issue 6): loss-weighting methods ≤ 1.05× EW; mgda-ub ≤ 1.20×; on a GPU the batched
engine at least 2× faster than the loop engine at 14 tasks.

On a shared machine the speed drifts while the script runs, so it measures in rounds: each
round times EW, then every other cell, then EW again, and a cell's ratio for that round is its
time over the mean of the round's two EW times. The table gives the median ratio over rounds
and its range (min–max), which shows how noisy the machine was.

    python benchmarks/step_cost.py --device cpu --image-size 32 --batch-size 64 --rounds 3 --out docs/step_cost_cpu.md
    python benchmarks/step_cost.py --device cuda --image-size 224 --batch-size 128 --max-batch --out docs/step_cost_gpu.md
"""

from __future__ import annotations

import argparse
import gc
import statistics
from dataclasses import replace

import torch
from bench_common import device_label, emit

from mtlbench import backend, costs
from mtlbench.config import build_config
from mtlbench.registry import METHODS
from mtlbench.tasks import TASK_NAMES
from mtlbench.training import build_method, build_model, build_optimizer, resolve_runtime, training_step


def fixed_batch(batch_size: int, image_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random batch (images in the device's layout, 20% positive labels) on `device`."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 1, image_size, image_size, generator=gen).to(device)
    y = (torch.rand(batch_size, len(TASK_NAMES), generator=gen) < 0.2).float().to(device)
    return backend.prepare_input(x), y


def time_method(config, device, x, y, steps: int, warmup: int) -> dict[str, float]:
    """Median step and method time (s) and peak memory (MiB) of one method on a fixed batch.

    Each step is timed with the device synchronized before and after (a benchmark may sync);
    the method's own part is marked with the trainer's StepTimer.
    """
    torch.manual_seed(0)
    model = build_model(config, len(TASK_NAMES), device).train()
    method = build_method(config, TASK_NAMES).to(device)
    method.bind_training_labels(y.detach().cpu().to(torch.uint8))  # as the trainer does before step 0
    optimizer = build_optimizer(config, model, method)
    costs.reset_peaks(device)
    timer = costs.StepTimer(device)
    step_s = []
    for i in range(warmup + steps):
        t0 = costs.now(device)
        timer.start()
        training_step(model, method, optimizer, x, y, config, i, 0, device, timer)
        timer.end()
        t1 = costs.now(device)
        if i >= warmup:
            step_s.append(t1 - t0)
    method_s = timer.collect()[1][warmup:]
    cuda = costs.peak_cuda_mb(device)
    return {
        "step_s": statistics.median(step_s),
        "method_s": statistics.median(method_s),
        "memory_mb": cuda if cuda is not None else costs.peak_rss_mb(),
    }


def _fits(config, device: torch.device, batch_size: int, image_size: int) -> tuple[bool, str]:
    try:
        x, y = fixed_batch(batch_size, image_size, device)
        time_method(config, device, x, y, steps=1, warmup=1)
        return True, ""
    except torch.cuda.OutOfMemoryError:
        return False, "out of memory"
    except RuntimeError as exc:  # cuBLAS/cuDNN workspace failures, 32-bit indexing limits near the edge
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"


def largest_batch(
    config, device: torch.device, image_size: int, start: int, limit: int, seconds: float
) -> tuple[int, str]:
    """(largest batch that trains two steps on the device, how the search ended: "" when exact to 1/16,
    "≥" when `limit` or the time budget stopped it): doubling from `start`, then bisection."""
    deadline = costs.now(device) + seconds

    def fits(b: int) -> bool:
        ok, why = _fits(config, device, b, image_size)
        gc.collect()
        torch.cuda.empty_cache()
        print(f"    {config.method:12s} batch {b:6d}: {'fits' if ok else why}", flush=True)
        return ok

    low, high = 0, start
    while high <= limit and fits(high):
        low, high = high, high * 2
        if costs.now(device) > deadline:
            return low, "≥"
    if high > limit:
        return low, "≥"
    while high - low > max(1, low // 16):
        if costs.now(device) > deadline:
            return low, "≥"
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low, ""


def main() -> None:
    """Parse arguments, time every method/engine, print (and optionally write) a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | tf32 | bf16")
    ap.add_argument("--max-batch", action="store_true", help="also search each method's largest batch (CUDA only)")
    ap.add_argument("--batch-limit", type=int, default=16384, help="upper end of the largest-batch search")
    ap.add_argument("--search-seconds", type=float, default=20.0, help="time budget of each method's batch search")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per method (after warm-up)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="repetitions of the whole sequence (ratios: median)")
    ap.add_argument("--methods", default="all")
    ap.add_argument("--engines", default="batched,loop")
    ap.add_argument("--out", help="also write the markdown table here")
    args = ap.parse_args()

    base = resolve_runtime(
        replace(
            build_config("quick"),
            device=args.device,
            precision=args.precision,
            image_size=args.image_size,
            batch_size=args.batch_size,
        )
    )
    device = torch.device(base.device)
    backend.configure(device, base.precision)
    if args.max_batch and device.type != "cuda":
        raise SystemExit("--max-batch needs a CUDA device (on a CPU the batch is bounded by host memory)")
    names = METHODS.names() if args.methods == "all" else args.methods.split(",")
    engines = args.engines.split(",")
    x, y = fixed_batch(args.batch_size, args.image_size, device)

    cells = [("ew", "-")]
    for name in names:
        if name == "ew":
            continue
        needs_grads = METHODS.get(name).space().per_task
        cells += [(name, e) for e in engines] if needs_grads else [(name, "-")]
    cells.append(("ew", "-"))

    per_round: list[dict[tuple[str, str], dict[str, float]]] = []
    for r in range(args.rounds):
        timed: dict[tuple[str, str], dict[str, float]] = {}
        ew_times, ew_memory = [], []
        for i, (name, engine) in enumerate(cells):
            cfg = replace(base, method=name, grad_engine=engine if engine != "-" else "batched")
            res = time_method(cfg, device, x, y, args.steps, args.warmup)
            if name == "ew" and i in (0, len(cells) - 1):
                ew_times.append(res["step_s"])
                ew_memory.append(res["memory_mb"])
            else:
                timed[(name, engine)] = res
            print(
                f"round {r + 1}/{args.rounds} {name:12s} {engine:8s} step {1000 * res['step_s']:8.1f} ms  "
                f"method {1000 * res['method_s']:8.1f} ms",
                flush=True,
            )
        ew = statistics.fmean(ew_times)
        for res in timed.values():
            res["ratio"] = res["step_s"] / ew
        timed[("ew", "-")] = {"step_s": ew, "method_s": 0.0, "ratio": 1.0, "memory_mb": ew_memory[0]}
        per_round.append(timed)

    largest: dict[str, str] = {}
    if args.max_batch:
        emit(table(per_round, cells, engines, names, largest, base, device, args), args.out)  # kept if the search dies
        for name in dict.fromkeys(["ew", *names]):  # with the engine that `--grad-engine auto` picks
            cfg = resolve_runtime(replace(base, method=name, grad_engine="auto"))
            found, bound = largest_batch(
                cfg, device, args.image_size, args.batch_size, args.batch_limit, args.search_seconds
            )
            engine = cfg.grad_engine if METHODS.get(name).space().per_task else "-"
            largest[(name, engine)] = f"{bound} {found}".strip()
    emit(table(per_round, cells, engines, names, largest, base, device, args), args.out)


def table(per_round, cells, engines, names, largest, base, device, args) -> list[str]:
    """The markdown table of the measured cells (and of the largest batches found so far)."""

    def median_of(key: tuple[str, str], field: str) -> float:
        return statistics.median(rd[key][field] for rd in per_round)

    memory_kind = "peak CUDA MiB" if device.type == "cuda" else "peak RSS MiB (process)"
    ew_ms = [1000 * rd[("ew", "-")]["step_s"] for rd in per_round]
    lines = [
        f"Step cost on {device_label(device)}, torch {torch.__version__}, {base.precision}, ResNet18, "
        f"{args.image_size} px, batch {args.batch_size}, 14 tasks; per cell the median of {args.steps} steps after "
        f"{args.warmup} warm-up, in {args.rounds} round(s). EW step {statistics.median(ew_ms):.1f} ms "
        f"(rounds: {', '.join(f'{v:.1f}' for v in ew_ms)}).",
        "",
        f"| method | grad engine | step (ms) | × EW (median) | × EW (range over rounds) | method adds (ms) | "
        f"{memory_kind} | loop ÷ batched | largest batch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in [("ew", "-"), *cells[1:-1]]:
        ratios = [rd[key]["ratio"] for rd in per_round]
        speedup = ""
        if key[1] == "batched" and (key[0], "loop") in per_round[0]:
            speedup = f"{median_of((key[0], 'loop'), 'step_s') / median_of(key, 'step_s'):.2f}"
        lines.append(
            f"| {key[0]} | {key[1]} | {1000 * median_of(key, 'step_s'):.1f} | "
            f"{statistics.median(ratios):.2f} | {min(ratios):.2f}–{max(ratios):.2f} | "
            f"{1000 * median_of(key, 'method_s'):.1f} | {max(rd[key]['memory_mb'] for rd in per_round):.0f} | "
            f"{speedup} | {largest.get(key, '')} |"
        )
    loss_ratios = [median_of(k, "ratio") for k in cells[1:-1] if k[1] == "-"]
    ub = [median_of(k, "ratio") for k in cells[1:-1] if k[0] == "mgda-ub"]
    lines += [
        "",
        "Targets: loss-weighting methods ≤ 1.05× EW: worst "
        + (f"{max(loss_ratios):.2f}×" if loss_ratios else "n/a")
        + "; mgda-ub ≤ 1.20×: "
        + (f"{min(ub):.2f}× (best engine)" if ub else "n/a")
        + "; batched ≥ 2× faster than loop (GPU): see the loop ÷ batched column.",
    ]
    return lines


if __name__ == "__main__":
    main()
