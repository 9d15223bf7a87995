"""Jacobians shared by the Gramian-weighting tests and their TorchJD cross-checks.

T = 3 and T = 14, several seeds: full-rank ones with task gradients of very different norms,
and rank-deficient ones (fewer dimensions than tasks, a duplicated task, a task that is the sum of
two others). Every Jacobian has all its rows in one open half-space (J m > 0 for some m), so no
non-negative combination of its rows vanishes: Nash-MTL's bargaining problem has a solution.
"""

from __future__ import annotations

import numpy as np


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
