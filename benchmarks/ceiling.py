"""The compute ceiling of the harness and how close full training gets to it, in one process.

1. matmul rate: a large square matrix multiply in the run's compute dtype (bf16 under bf16
   precision, fp32 otherwise), TFLOP/s: the device's practical peak;
2. compute ceiling: the EW training step (forward, 14 losses, backward, AdamW) on a batch
   already on the device, no loader, no metrics: images/s, and achieved TFLOP/s from the
   ResNet18 forward+backward FLOPs counted by torch.utils.flop_counter (convolutions and
   matmuls, the multiply-adds counted as 2 FLOPs);
3. pipeline: a full EW run through `train_run` (cxr14-synth through the image cache, the
   prefetching loader, device-side meters, per-epoch metrics and logging to SQLite) after the
   sweep's warm-up: training images/s (the run's stored `images_per_s`) ÷ the ceiling.

Target (issue 6): pipeline ÷ ceiling ≥ 0.90 on a GPU at 224 px, batch 128.

    python benchmarks/ceiling.py --device cpu --image-size 32 --batch-size 64 --images 4000 --out docs/ceiling_cpu_32px.md
    python benchmarks/ceiling.py --device cuda --image-size 224 --batch-size 128 --images 12000 --out docs/ceiling_gpu.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from bench_common import device_label, emit
from step_cost import fixed_batch, time_method
from torch.utils.flop_counter import FlopCounterMode

from mtlbench import backend, costs
from mtlbench.config import build_config
from mtlbench.results.store import ResultsStore
from mtlbench.sweep import load_dataset
from mtlbench.tasks import TASK_NAMES
from mtlbench.datasets.base import no_progress
from mtlbench.training import (
    build_method,
    build_model,
    build_optimizer,
    resolve_runtime,
    train_run,
    training_step,
    warm_up,
)


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 2.0) -> float:
    """TFLOP/s of an n×n by n×n matmul in `dtype` on `device` (median of repeated timings)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    for _ in range(3):
        a @ b
    times = []
    total = 0.0
    while total < seconds or len(times) < 5:
        t0 = costs.now(device)
        a @ b
        dt = costs.now(device) - t0
        times.append(dt)
        total += dt
    return 2 * n**3 / statistics.median(times) / 1e12


def step_flops(config, device: torch.device, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one EW training step's forward + backward (counted, not timed)."""
    model = build_model(replace(config, compile=False), len(TASK_NAMES), device).train()
    method = build_method(config, TASK_NAMES).to(device)
    optimizer = build_optimizer(config, model, method)
    with FlopCounterMode(display=False) as counter:
        training_step(model, method, optimizer, x, y, config, 0, 0, device)
    return float(counter.get_total_flops())


def pipeline_images_per_s(config, workdir: Path) -> tuple[float, float, dict]:
    """(training images/s, whole-run images/s incl. evaluation, stored costs) of a full EW run."""
    data = load_dataset(config, no_progress)
    device = torch.device(config.device)
    config = replace(config, data_fingerprint=data.info.get("fingerprint", ""))
    warm_up(config, data, device)
    with ResultsStore(workdir / "pipeline.sqlite") as store:
        out = train_run(config, data, store, {}, force=True)
        if out.status != "complete":
            raise SystemExit(f"pipeline run {out.status}: {out.detail}")
        run_costs = dict(store.query("SELECT * FROM costs WHERE run_id=?", (out.run_id,))[0])
    trained = run_costs["images_per_s"] * run_costs["train_s"]
    return run_costs["images_per_s"], trained / run_costs["wall_s"], run_costs


def main() -> None:
    """Parse arguments, measure the three stages, print (and optionally write) a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="auto | fp32 | tf32 | bf16")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=4000, help="cxr14-synth images of the pipeline run")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the pipeline run")
    ap.add_argument("--steps", type=int, default=10, help="timed ceiling steps (after warm-up)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--matmul-n", type=int, default=0, help="matmul size (default 8192 on CUDA, 2048 on CPU)")
    ap.add_argument("--compile", action="store_true", help="compile the model (both the ceiling and the pipeline)")
    ap.add_argument("--data-dir", help="where cxr14-synth is generated (default: a temporary folder)")
    ap.add_argument("--out", help="also write the markdown table here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="ceiling-bench-") as tmp:
        config = resolve_runtime(
            replace(
                build_config("quick"),
                device=args.device,
                precision=args.precision,
                method="ew",
                image_size=args.image_size,
                batch_size=args.batch_size,
                epochs=args.epochs,
                # --images in all, a fifth of them test, as the pipeline rows measured before test sizes were separate
                synth_images=args.images - args.images // 5,
                synth_test_images=args.images // 5,
                compile=args.compile,
                data_dir=args.data_dir or str(Path(tmp) / "data"),
            )
        )
        device = torch.device(config.device)
        backend.configure(device, config.precision)
        compute_dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32
        n = args.matmul_n or (8192 if device.type == "cuda" else 2048)
        peak = matmul_tflops(device, compute_dtype, n)
        print(f"matmul {n}³ {compute_dtype}: {peak:.2f} TFLOP/s", flush=True)

        x, y = fixed_batch(args.batch_size, args.image_size, device)
        flops = step_flops(config, device, x, y)
        step_s = time_method(config, device, x, y, args.steps, args.warmup)["step_s"]
        ceiling = args.batch_size / step_s
        achieved = flops / step_s / 1e12
        print(f"ceiling: {ceiling:.1f} images/s, {achieved:.3f} TFLOP/s", flush=True)

        train_rate, run_rate, run_costs = pipeline_images_per_s(config, Path(tmp))
        print(f"pipeline: {train_rate:.1f} images/s training, {run_rate:.1f} images/s whole run", flush=True)

    efficiency = train_rate / ceiling
    target_case = device.type == "cuda" and args.image_size == 224 and args.batch_size == 128
    memory = (
        f"peak CUDA {run_costs['peak_cuda_mb']:.0f} MiB"
        if run_costs.get("peak_cuda_mb") is not None
        else f"peak RSS {run_costs['peak_rss_mb']:.0f} MiB"
    )
    lines = [
        f"Compute ceiling and pipeline on {device_label(device)}, torch {torch.__version__}, precision "
        f"{config.precision}{', compiled' if config.compile else ''}, ResNet18 with 14 heads, {args.image_size} px, "
        f"batch {args.batch_size}.",
        "",
        "| stage | images/s | TFLOP/s | ÷ ceiling | notes |",
        "|---|---:|---:|---:|---|",
        f"| matmul {n}×{n}, {str(compute_dtype).removeprefix('torch.')} | – | {peak:.2f} | – | the device's practical peak |",
        f"| compute ceiling: EW step on a device-resident batch | {ceiling:.1f} | {achieved:.3f} | 1.00 | "
        f"{flops / args.batch_size / 1e9:.2f} GFLOP per image (fwd+bwd); {achieved / peak:.0%} of the matmul rate |",
        f"| pipeline: full EW run, training | {train_rate:.1f} | {flops / args.batch_size * train_rate / 1e12:.3f} | "
        f"{efficiency:.2f} | cxr14-synth {args.images} images, {args.epochs} epochs, loader + meters + logging; {memory} |",
        f"| pipeline: full EW run, incl. evaluation | {run_rate:.1f} | – | {run_rate / ceiling:.2f} | "
        f"wall {run_costs['wall_s']:.1f} s of which evaluation {run_costs['eval_s']:.1f} s |",
        "",
        f"Pipeline efficiency (training images/s ÷ ceiling) = {efficiency:.3f}. The issue's target is ≥ 0.90 on a GPU "
        f"at 224 px, batch 128"
        + (
            f": {'met' if efficiency >= 0.9 else 'NOT met'}."
            if target_case
            else f"; this run ({device.type}, {args.image_size} px, batch {args.batch_size}) is not that case."
        ),
        "",
        f"Settings: {json.dumps({k: getattr(config, k) for k in ('precision', 'grad_engine', 'compile', 'optimizer', 'augment')})}",
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
