"""Time of each Gramian method's own solver per step: the weights from a 14 × 14 Gramian, the gradients excluded.

A Gramian method's step is the T backward passes of the per-task gradients, the Gramian G = J Jᵀ,
the weights from G (its solver: MGDA's Frank-Wolfe, Nash-MTL's bargaining iterations, UPGrad's
quadratic programs, …) and the update Σ w_t g_t. `benchmarks/step_cost.py` times the whole step;
this times the solver alone (`usable_tasks`, then `gramian_weights` on them, as the step calls them), on Gramians of
random Jacobians with 14 tasks whose gradients differ in norm (log-normal) and share a component
(every pair of tasks neither aligned nor opposed): the median and 90th percentile over `--gramians`
steps, after 5 warm-up calls, in one process.

    python benchmarks/solver_cost.py --out docs/solver_cost_cpu.md
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from bench_common import device_label, emit

from mtlbench.methods.gramian import GramianMethod
from mtlbench.plan import method_sets
from mtlbench.registry import METHODS
from mtlbench.tasks import TASK_NAMES


def gramians(count: int, tasks: int, dims: int, seed: int) -> list[torch.Tensor]:
    """Gramians of random Jacobians (tasks × dims) with log-normal row norms and a shared component."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        shared = rng.normal(size=dims)
        j = rng.normal(size=(tasks, dims)) + 0.5 * shared / np.linalg.norm(shared) * np.sqrt(dims)
        j *= rng.lognormal(0.0, 1.0, size=(tasks, 1))
        out.append(torch.from_numpy(j @ j.T))
    return out


def solver_times(name: str, grams: list[torch.Tensor], warmup: int = 5) -> list[float]:
    """Seconds of each `gramian_weights` call of method `name` over `grams` (its state carried from step to step)."""
    method = METHODS.get(name)(TASK_NAMES)
    losses = torch.ones(len(TASK_NAMES), dtype=torch.float64)
    times = []
    for i, gram in enumerate(grams[:warmup] + grams):
        start = time.perf_counter()
        rows = method.usable_tasks(gram, losses).nonzero().squeeze(1)  # the screening the step does first
        method.gramian_weights(gram[rows][:, rows], losses[rows])
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    """Time every Gramian method's solver and print (or write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gramians", type=int, default=200, help="steps timed per method")
    parser.add_argument("--dims", type=int, default=2000, help="columns of each random Jacobian")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args()
    grams = gramians(args.gramians, len(TASK_NAMES), args.dims, args.seed)
    names = [n for n in method_sets()["gradient"] if issubclass(METHODS.get(n), GramianMethod)]
    lines = [
        f"Solver time per step on {device_label(torch.device('cpu'))}, torch {torch.__version__}: "
        f"`usable_tasks` + `gramian_weights` on {args.gramians} Gramians of random 14 × {args.dims} Jacobians (float64), "
        "after 5 warm-up calls; the per-task gradients and the Gramian itself are not included.",
        "",
        "| method | median (ms) | 90th percentile (ms) | max (ms) |",
        "|---|---:|---:|---:|",
    ]
    for name in names:
        ms = [1000 * t for t in solver_times(name, grams)]
        lines.append(f"| {name} | {statistics.median(ms):.3f} | {np.percentile(ms, 90):.3f} | {max(ms):.3f} |")
        print(lines[-1], flush=True)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
