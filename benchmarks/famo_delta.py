"""How well FAMO's next-batch approximation measures the loss decrease the authors' update uses.

Trains `famo` (the authors' same-batch update) on the default data and, at every step k, records
both signals the two variants would feed the logit step:

    δ_same(k) = log ℓ(batch k, θ_k) − log ℓ(batch k, θ_{k+1})       (famo: one extra forward)
    δ_next(k) = log ℓ(batch k, θ_k) − log ℓ(batch k+1, θ_{k+1})     (famo-nextbatch: free)

and prints, per task, the ratio of their standard deviations and their correlation. Numbers are
properties of the data and protocol, not timings: any machine gives the same ones (CPU default).

    python benchmarks/famo_delta.py                      # quick preset, 3 epochs, seed 0
    python benchmarks/famo_delta.py --out docs/famo_delta_cpu.md
"""

from __future__ import annotations

import argparse
from pathlib import Path
from dataclasses import replace

import numpy as np
import torch
from bench_common import emit

from mtlbench.config import build_config
from mtlbench.datasets.base import no_progress
from mtlbench.batches import DeviceSplit
from mtlbench.sweep import load_dataset
from mtlbench.training import build_method, epoch_batches, build_model, build_optimizer, resolve_runtime, training_step


def main() -> None:
    """Train famo, record δ_same and δ_next per step and task, print their spread and agreement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the table here")
    parser.add_argument(
        "--data-dir",
        default=str(Path(__file__).resolve().parents[1] / "data"),
        help="where cxr14-synth is generated (default: the repository's data/, as `mtlbench run`)",
    )
    args = parser.parse_args()

    config = resolve_runtime(
        replace(
            build_config(args.preset),
            method="famo",
            device="cpu",
            seed=args.seed,
            data_dir=args.data_dir,
            **({"epochs": args.epochs} if args.epochs else {}),
        )
    )
    device = torch.device("cpu")
    data = load_dataset(config, no_progress)
    torch.manual_seed(config.seed)
    model = build_model(config, len(data.task_names), device).train()
    method = build_method(config, data.task_names)
    optimizer = build_optimizer(config, model, method)

    before, after = [], []
    real_step, real_after = method.step, method.after_update

    def step(ctx):
        before.append(ctx.losses.detach().double().clone())
        return real_step(ctx)

    def after_update(ctx, reevaluate):
        def recorded():
            losses = reevaluate()
            after.append(losses.detach().double().clone())
            return losses

        real_after(ctx, recorded)

    method.step, method.after_update = step, after_update
    split = DeviceSplit.from_split(data.train, device)
    k = 0
    for epoch in range(config.epochs):
        for x, y in epoch_batches(split, config, epoch, device):
            training_step(model, method, optimizer, x, y, config, k, epoch, device)
            k += 1
    log_before = torch.stack(before).clamp_min(1e-8).log().numpy()
    log_after = torch.stack(after).clamp_min(1e-8).log().numpy()
    same = (log_before - log_after)[:-1]
    nxt = log_before[:-1] - log_before[1:]

    ratio = nxt.std(0) / same.std(0)
    corr = np.array([np.corrcoef(same[:, t], nxt[:, t])[0, 1] for t in range(same.shape[1])])
    lines = [
        f"FAMO's logit signal on {config.dataset} (preset {args.preset}, {config.epochs} epochs, batch "
        f"{config.batch_size}, seed {config.seed}, {same.shape[0]} steps): δ_same is the authors' same-batch "
        "loss decrease, δ_next the next-batch approximation's.",
        "",
        "| task | sd(δ_same) | sd(δ_next) | sd ratio next/same | corr(δ_same, δ_next) |",
        "|---|---:|---:|---:|---:|",
    ]
    for t, name in enumerate(data.task_names):
        lines.append(f"| {name} | {same[:, t].std():.4f} | {nxt[:, t].std():.4f} | {ratio[t]:.1f} | {corr[t]:+.2f} |")
    lines.append(f"| **median over tasks** | | | **{np.median(ratio):.1f}** | **{np.median(corr):+.2f}** |")
    lines.append("")
    lines.append(
        f"Range over tasks: sd ratio {ratio.min():.1f}–{ratio.max():.1f}, correlation "
        f"{corr.min():+.2f} to {corr.max():+.2f}."
    )
    emit(lines, args.out)


if __name__ == "__main__":
    main()
