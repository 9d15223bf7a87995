"""Jacobians and checks shared by the Gramian-weighting tests and their TorchJD cross-checks.

T = 3 and T = 14, several seeds: full-rank ones with task gradients of very different norms,
and rank-deficient ones (fewer dimensions than tasks, a duplicated task, a task that is the sum of
two others). Every Jacobian has all its rows in one open half-space (J m > 0 for some m), so no
non-negative combination of its rows vanishes: Nash-MTL's bargaining problem has a solution.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from mtlbench.datasets.base import DatasetBundle
from mtlbench.methods.base import Method, StepContext, StepOutput

if TYPE_CHECKING:
    from tests.conftest import TinyRun


def _half_space(j: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """j plus a shared component m large enough that every row has a positive inner product with m."""
    m = rng.normal(size=j.shape[1])
    m /= np.linalg.norm(m)
    shift = max(0.0, float(-(j @ m).min())) + 0.5 * float(np.linalg.norm(j, axis=1).mean())
    return j + shift * m


def jacobians() -> dict[str, np.ndarray]:
    """{name: J (T, P)} in float64."""
    cases: dict[str, np.ndarray] = {}
    for t in (3, 14):
        for seed in range(3):
            rng = np.random.default_rng(100 * t + seed)
            scales = rng.lognormal(0.0, 1.0, size=(t, 1))
            cases[f"full-T{t}-s{seed}"] = _half_space(rng.normal(size=(t, 2 * t + 5)), rng) * scales
            low = rng.normal(size=(t, max(t // 2, 1))) @ rng.normal(size=(max(t // 2, 1), 3 * t))
            cases[f"low-rank-T{t}-s{seed}"] = _half_space(low, rng) * scales
            j = _half_space(rng.normal(size=(t, 2 * t + 5)), rng)
            j[-1] = j[0]
            cases[f"duplicate-T{t}-s{seed}"] = j
            j = _half_space(rng.normal(size=(t, 2 * t + 5)), rng)
            j[-1] = j[0] + j[1]
            cases[f"sum-of-two-T{t}-s{seed}"] = j
    for name, j in cases.items():
        assert np.all(np.linalg.norm(j, axis=1) > 0), name
    return cases


def rank(j: np.ndarray) -> int:
    """Numerical rank of J."""
    return int(np.linalg.matrix_rank(j))


CASES = jacobians()
NAMES = sorted(CASES)


def ones(t: int) -> torch.Tensor:
    """Task losses for steps whose losses do not matter."""
    return torch.ones(t, dtype=torch.float64)


def step_with_bad_rows(
    method: Method, j: torch.Tensor, nonfinite: int, zero: int, bad: float = float("nan")
) -> tuple[StepOutput, list[int]]:
    """Put `bad` in one entry of row `nonfinite` of j and zero row `zero`, then step `method` on j.

    Checks what every Gramian method promises for such rows: a finite update, weight 0 for both
    rows, one count each in the diagnostics. Returns the step's output and the rows kept.
    """
    j[nonfinite, 0] = bad
    j[zero] = 0.0
    out = method.step(StepContext(ones(j.shape[0]), 0, 0, grads=j))
    assert torch.isfinite(out.weights).all() and torch.isfinite(out.shared_grad).all()
    assert out.weights[nonfinite] == 0 and out.weights[zero] == 0
    diagnostics = method.diagnostics()
    assert diagnostics["nonfinite_grad_rows"] == 1 and diagnostics["zero_grad_rows"] == 1
    return out, [i for i in range(j.shape[0]) if i not in (nonfinite, zero)]


def end_to_end_weights(run: TinyRun, bundle: DatasetBundle, *zero_counters: str) -> list[float]:
    """The 14 epoch-mean weights of a complete tiny run that logged weights every step, after checking
    that it never skipped an update for a non-finite result and that each of `zero_counters` is 0."""
    run.assert_complete()
    values = run.per_step_epoch_means(len(bundle.train.labels) // 16)
    for counter in ("nonfinite_update_steps", *zero_counters):
        assert run.diagnostics[counter] == 0, counter
    return values


def assert_absent_task_left_out(cls: type[Method], params: object = None, scale: float = 1.0, seed: int = 3) -> None:
    """With missing labels a task without a labelled image has a zero gradient row: the method's weights are
    those of the same method on the present tasks alone (times `scale`, e.g. T/T' for a method that scales its
    weights by T), 0 for the absent task, which is counted as a zero gradient row; the update is theirs too."""
    rng = np.random.default_rng(seed)
    present = torch.from_numpy(_half_space(rng.normal(size=(3, 6)), rng))  # 3 present tasks
    jacobian = torch.cat([present[:1], torch.zeros(1, 6, dtype=torch.float64), present[1:]])  # task 1 absent
    losses = torch.tensor([0.7, 0.0, 0.4, 1.3], dtype=torch.float64)
    labelled = torch.tensor([5, 0, 3, 8])
    method = cls(("a", "b", "c", "d"), params, generator=torch.Generator().manual_seed(seed))
    out = method.step(StepContext(losses, 0, 0, grads=jacobian, labelled=labelled))
    alone = cls(("a", "c", "d"), params, generator=torch.Generator().manual_seed(seed))
    expected = alone.step(StepContext(losses[[0, 2, 3]], 0, 0, grads=present, labelled=labelled[[0, 2, 3]]))
    assert out.weights[1].item() == 0.0
    torch.testing.assert_close(out.weights[[0, 2, 3]], scale * expected.weights, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out.shared_grad, scale * expected.shared_grad, rtol=1e-9, atol=1e-12)
    assert method.diagnostics()["zero_grad_rows"] == 1.0
    assert alone.diagnostics()["zero_grad_rows"] == 0.0
