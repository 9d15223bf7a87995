"""What a loaded dataset's labels allow, said before any training: a task with one class in a split.

A task whose images in a split are all negative (or all positive) has no AUROC there. That is a
warning, not an error: rare findings (Hernia is 0.2% of NIH) are often absent from small data
(cxr14-synth at its default sizes, `--views`, `--allow-missing`), the per-task metric is stored
as undefined (NULL, `—` in the report) and every mean over tasks skips it. Said at load time, the
user knows before training what the last table will not hold.
"""

from __future__ import annotations

import numpy as np

from mtlbench.datasets.base import Split
from mtlbench.tasks import TASK_NAMES

# what a task without both classes costs, per split
CONSEQUENCE = {
    "train": "the model cannot learn them (their loss only teaches one answer)",
    "val": "their validation AUROC is undefined: model selection averages the other tasks",
    "test": "their test AUROC cannot be computed: the report shows — for them and averages the other tasks",
}


def one_class_tasks(labels: np.ndarray, tasks: tuple[str, ...] = TASK_NAMES) -> tuple[list[str], list[str]]:
    """(tasks with no positive, tasks with no negative) among the rows of `labels` (N, T)."""
    positives = labels.sum(axis=0)
    return ([t for t, n in zip(tasks, positives) if n == 0], [t for t, n in zip(tasks, positives) if n == len(labels)])


def label_warnings(dataset: str, splits: dict[str, Split], tasks: tuple[str, ...] = TASK_NAMES) -> list[str]:
    """One line per split in which some task has one class only, naming the tasks; [] when there are none."""
    lines = []
    for name, split in splits.items():
        if not len(split):
            continue
        no_positive, no_negative = one_class_tasks(split.labels, tasks)
        parts = ([f"no positive {', '.join(no_positive)}"] if no_positive else []) + (
            [f"no negative {', '.join(no_negative)}"] if no_negative else []
        )
        if parts:
            lines.append(
                f"{dataset}: the {name} split ({len(split):,} images) has {' and '.join(parts)}; "
                f"{CONSEQUENCE.get(name, 'their AUROC is undefined there')}"
            )
    return lines
