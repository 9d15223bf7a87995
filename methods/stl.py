"""Single-task learning (STL): the baseline every multi-task comparison is measured against.

One network per task, each trained on its own loss alone, under the same protocol as the
multi-task runs (Maninis et al., CVPR 2019, and Navon et al., ICML 2022, define Δm% against it;
Kurin et al., NeurIPS 2022, and Xin et al., NeurIPS 2022, ask for it in every table). A run of
`stl` trains the shared ResNet18 with one head on one task (`RunConfig.tasks`); `mtlbench run --stl`
adds one such run per task and seed, and the report joins each seed's 14 runs into one `stl` row.
"""

from __future__ import annotations

from mtlbench.errors import UserError
from mtlbench.methods.ew import EqualWeighting
from mtlbench.methods.params import SINGLE_TASK
from mtlbench.registry import register_method


@register_method(SINGLE_TASK)
class SingleTask(EqualWeighting):
    """Equal weighting on the one task a single-task run trains: its loss, weight 1."""

    description = "Single-task baseline: one network per task, its own loss alone (run with `mtlbench run --stl`)."


def check_single_task(method: str, tasks: tuple[str, ...]) -> None:
    """A UserError unless an `stl` run trains exactly one task (on all of them it would be EW)."""
    if method == SINGLE_TASK and len(tasks) != 1:
        raise UserError(
            f"stl trains one task per run, not {len(tasks)}: use `mtlbench run --stl`, which adds one run per task"
        )
