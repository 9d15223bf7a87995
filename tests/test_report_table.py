"""How the report prints p-values (mtlbench.report.table.format_p): never `p=0`, and a p at the bootstrap's
resolution limit, adjusted or not, as the upper bound it is."""

from __future__ import annotations

import numpy as np

from mtlbench.report.stats import bootstrap_difference, holm
from mtlbench.report.table import format_p

B = 999  # resamples: the smallest two-sided bootstrap p is 2 / (B + 1) = 0.002


def test_a_raw_bootstrap_p_at_its_limit_is_an_upper_bound():
    d = bootstrap_difference(0.05, np.linspace(0.01, 0.09, B))  # no resample on the far side of 0
    assert d.p == 2 / (B + 1)
    assert format_p(d.p, B, True) == " p≤0.002"


def test_a_holm_adjusted_p_keeps_the_bound_of_a_raw_p_at_the_limit():
    raw = np.array([2 / (B + 1), 2 / (B + 1), 0.04, 0.5])
    adjusted = holm(raw)
    assert adjusted[0] == 4 * raw[0]  # m · p_(1): above the limit, yet still only a bound
    assert format_p(adjusted[0], B, True, raw[0]) == " p≤0.008"
    assert format_p(adjusted[2], B, True, raw[2]) == " p=0.08"  # 2 · 0.04, an exact bootstrap p
    assert format_p(adjusted[0], B, True) == " p=0.008"  # without its raw p the bound cannot be known


def test_untested_and_paired_t_p_values():
    assert format_p(float("nan"), B, True) == ""
    assert format_p(1e-6, 0, False) == " p=1e-06"  # a t-test's p has no resolution limit
