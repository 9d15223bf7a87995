"""Shared fixtures: a tiny in-memory dataset whose labels are visible in the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from mtlbench.datasets.base import DatasetBundle, Split
from mtlbench.tasks import TASK_NAMES


def make_split(n: int, size: int, seed: int, offset: int = 0) -> Split:
    """Random images where task t's label brightens a stripe t of the image."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(TASK_NAMES))) < 0.3).astype(np.uint8)
    images = rng.integers(0, 120, size=(n, size, size)).astype(np.int32)
    rows = np.array_split(np.arange(size), len(TASK_NAMES))
    for t, r in enumerate(rows):
        images[:, r, :] += 100 * labels[:, t, None, None]
    return Split(
        images=np.clip(images, 0, 255).astype(np.uint8),
        labels=labels,
        image_ids=np.array([f"{offset + i:08d}_000.png" for i in range(n)]),
        patient_ids=np.arange(offset, offset + n),
    )


def make_bundle(n_train: int = 96, size: int = 32) -> DatasetBundle:
    """A small train/val/test bundle with disjoint patients."""
    return DatasetBundle(
        name="toy",
        train=make_split(n_train, size, 1, 0),
        val=make_split(48, size, 2, 10_000),
        test=make_split(64, size, 3, 20_000),
        info={"fingerprint": "toy"},
    )


@pytest.fixture
def toy_bundle() -> DatasetBundle:
    """A tiny dataset for trainer tests."""
    return make_bundle()
