"""The dataset contract: a loader returns three splits of uint8 images and 0/1 labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from mtlbench.tasks import TASK_NAMES


@dataclass(frozen=True)
class Split:
    """One split held in memory: images (N, H, W) uint8, labels (N, T) uint8 in TASK_NAMES order."""

    images: np.ndarray
    labels: np.ndarray
    image_ids: np.ndarray
    patient_ids: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 3:
            raise ValueError(f"images must be uint8 (N, H, W), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (n, len(TASK_NAMES)):
            raise ValueError(f"labels must be ({n}, {len(TASK_NAMES)}), got {self.labels.shape}")
        if len(self.image_ids) != n or len(self.patient_ids) != n:
            raise ValueError("image_ids and patient_ids must have one entry per image")

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class DatasetBundle:
    """Train/val/test splits plus provenance (`info`) that is stored with every run."""

    name: str
    train: Split
    val: Split
    test: Split
    info: dict[str, Any] = field(default_factory=dict)
    task_names: tuple[str, ...] = TASK_NAMES


@dataclass(frozen=True)
class DataRequest:
    """What a run asks of a dataset loader."""

    data_dir: Path
    image_size: int
    data_seed: int = 0
    val_fraction: float = 0.1
    synth_images: int = 3000
    views: str = "all"


class ProgressFactory(Protocol):
    """Makes a progress callback: `advance = factory(description, total)`; `advance(n)`."""

    def __call__(self, description: str, total: int) -> Callable[[int], None]: ...


def no_progress(description: str, total: int) -> Callable[[int], None]:
    """A ProgressFactory that shows nothing."""
    return lambda n=1: None


DatasetLoader = Callable[[DataRequest, ProgressFactory], DatasetBundle]
