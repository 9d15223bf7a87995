"""mtlbench's MGDA, PCGrad and CAGrad against torchjd's (the optional extra; CI installs it). The methods added
with the adapter are cross-checked in their own test files (test_method_<name>.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torchjd = pytest.importorskip("torchjd")  # pip install -e '.[torchjd]'
from torchjd import aggregation as jd  # noqa: E402

from mtlbench.methods.cagrad import CAGrad  # noqa: E402
from mtlbench.methods.mgda import mgda_weights  # noqa: E402
from mtlbench.methods.params import CAGradParams  # noqa: E402
from mtlbench.methods.pcgrad import pcgrad_coefficients  # noqa: E402

SEEDS = range(4)


def _gramian(t: int, seed: int, rank: int | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    j = torch.randn(rank or t, 40, generator=gen, dtype=torch.float64)
    if rank is not None:  # t gradients in a rank-`rank` span
        j = torch.randn(t, rank, generator=gen, dtype=torch.float64) @ j
    return j @ j.T


@pytest.mark.parametrize("t, rank", [(3, None), (5, None), (14, None), (14, 5)])
@pytest.mark.parametrize("seed", SEEDS)
def test_mgda_is_torchjds_min_norm_point(t, rank, seed):
    """The min-norm point of the gradients' hull (normalization=none; mgda applies T·α, torchjd's weights are α).
    torchjd's plain Frank–Wolfe, even at ε = 1e-14 and 100,000 iterations, converges sublinearly: for 3–5 tasks it
    reaches our α to 1e-6, for 14 it stops short (its norm is up to ~1e-3 above ours). So: equal α where torchjd
    converges, and everywhere ours is optimal (the simplex KKT conditions) and no worse than torchjd's."""
    gram = _gramian(t, seed, rank)
    ours, converged = mgda_weights(gram, torch.ones(t, dtype=torch.float64), "none")
    # for 14 tasks torchjd stops short at any budget, and optimality is the KKT check below: 10,000 iterations there
    theirs = jd.MGDAWeighting(epsilon=1e-14, max_iters=100_000 if t <= 5 else 10_000)(gram)
    assert converged
    value = float(ours @ gram @ ours)
    assert value <= float(theirs @ gram @ theirs) + 1e-12
    slope = gram @ ours  # KKT: (Gα)_t ≥ αᵀGα for every t, with equality where α_t > 0
    assert float(slope.min()) >= value - 1e-9 * max(value, 1.0)
    assert torch.allclose(slope[ours > 1e-9], torch.full_like(slope[ours > 1e-9], value), rtol=1e-7, atol=1e-9)
    if t <= 5 and rank is None:
        assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("t", [3, 14])
@pytest.mark.parametrize("seed", SEEDS)
def test_pcgrad_is_torchjds_for_the_same_orders(t, seed):
    """torchjd draws task i's order as torch.randperm(T) from the global RNG (skipping i); ours as a permutation of
    the others from the method's generator. Given the same orders, the weights Σ_i (g_i projected) are equal."""
    gram = _gramian(t, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        theirs = jd.PCGradWeighting()(gram)
        torch.manual_seed(seed)
        orders = torch.stack([p[p != i] for i, p in enumerate(torch.randperm(t) for _ in range(t))])
    ours = torch.from_numpy(np.asarray(pcgrad_coefficients(gram, orders))).sum(dim=0)
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("t", [3, 14])
@pytest.mark.parametrize("seed", SEEDS)
def test_cagrad_solves_torchjds_problem_at_least_as_well(t, seed):
    """Both solve max_d min_t g_tᵀd s.t. ‖d − g0‖ ≤ c‖g0‖ (c = 0.4); torchjd through cvxpy, whose tolerance leaves
    its weights up to ~1e-4 relative from the optimum, ours through the exact dual. Convention: with rescale=none
    our weights are T × torchjd's. So: both feasible, our worst-task gain at least torchjd's, weights within 1e-3."""
    gram = _gramian(t, seed)
    method = CAGrad([str(i) for i in range(t)], CAGradParams(rescale="none"))
    ours = method.gramian_weights(gram, torch.ones(t, dtype=torch.float64)) / t
    theirs = jd.CAGradWeighting(c=0.4, norm_eps=0)(gram)
    g0 = torch.full((t,), 1.0 / t, dtype=torch.float64)
    radius = 0.4 * float(g0 @ gram @ g0) ** 0.5
    for w in (ours, theirs):
        assert float((w - g0) @ gram @ (w - g0)) ** 0.5 <= radius * (1 + 1e-6)
    assert float((gram @ ours).min()) >= float((gram @ theirs).min()) - 1e-9
    assert torch.allclose(ours, theirs, rtol=1e-3, atol=1e-6)
