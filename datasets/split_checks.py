"""What a loaded dataset's labels allow, said before any training: a task with one class in a split.

A task whose images in a split are all negative (or all positive) has no AUROC there. That is a
warning, not an error: rare findings (Hernia is 0.2% of NIH) are often absent from small data
(cxr14-synth at its default sizes, `--views`, `--allow-missing`), the per-task metric is stored
as undefined (NULL, `—` in the report) and every mean over tasks skips it. Said at load time, the
user knows before training what the last table will not hold.
"""

from __future__ import annotations

import numpy as np

from mtlbench.datasets.base import Split, labelled, positives
from mtlbench.tasks import TASK_NAMES

# what a task without both classes costs, per split
CONSEQUENCE = {
    "train": "the model cannot learn them (their loss only teaches one answer)",
    "val": "their validation AUROC is undefined: model selection averages the other tasks",
    "test": "their test AUROC cannot be computed: the report shows — for them and averages the other tasks",
}
# what a task without any label costs, per split (a dataset that does not label a finding at all)
UNLABELLED_CONSEQUENCE = {
    "train": "they never train (no loss, no gradient) and keep their initial heads",
    "val": "model selection averages the other tasks",
    "test": "they have no test metrics: the report shows — for them",
}


def one_class_tasks(labels: np.ndarray, tasks: tuple[str, ...] = TASK_NAMES) -> tuple[list[str], list[str]]:
    """(tasks with no positive, tasks with no negative) among the labelled rows of `labels` (N, T);
    a task without any label in the split is in neither (see `unlabelled_tasks`)."""
    pos, n = positives(labels), labelled(labels).sum(axis=0)
    return (
        [t for t, p, k in zip(tasks, pos, n) if k and p == 0],
        [t for t, p, k in zip(tasks, pos, n) if k and p == k],
    )


def unlabelled_tasks(labels: np.ndarray, tasks: tuple[str, ...] = TASK_NAMES) -> list[str]:
    """Tasks that no row of `labels` (N, T) has a label for (e.g. a finding the dataset does not label)."""
    return [t for t, k in zip(tasks, labelled(labels).sum(axis=0)) if k == 0]


def label_warnings(dataset: str, splits: dict[str, Split], tasks: tuple[str, ...] = TASK_NAMES) -> list[str]:
    """One line per split in which some task has one class only or no label, naming the tasks, and one
    line for the tasks no split labels (a finding the dataset does not label); [] when there are none."""
    nowhere = [t for t in tasks if all(t in unlabelled_tasks(s.labels, tasks) for s in splits.values() if len(s))]
    lines = []
    if nowhere and len(nowhere) < len(tasks):
        lines.append(
            f"{dataset} labels {len(tasks) - len(nowhere)} of the {len(tasks)} tasks: {', '.join(nowhere)} have no "
            "label in any split; they never train (no loss, no gradient) and have no metrics (— in the report)"
        )
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
        unlabelled = [t for t in unlabelled_tasks(split.labels, tasks) if t not in nowhere]
        if unlabelled:
            lines.append(
                f"{dataset}: the {name} split has no label for {', '.join(unlabelled)}; "
                f"{UNLABELLED_CONSEQUENCE.get(name, 'they have no metrics there')}"
            )
    return lines
