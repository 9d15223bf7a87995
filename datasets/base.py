"""The dataset contract: a loader returns three splits of uint8 images and 0/1 labels.

Labels are uint8 0/1 where every image has a label for every task (NIH, ChestMNIST, cxr14-synth),
and float32 0/1 with NaN for a missing label where a dataset leaves some out (CheXpert's blank or
uncertain findings, a finding PadChest does not label, `--synth-missing`): never a silent 0."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from mtlbench.tasks import TASK_NAMES


@dataclass(frozen=True)
class Split:
    """One split: rows of a shared uint8 pixel store plus labels (N, T) uint8 in its bundle's task order.

    `pixels` is (M, H, W) uint8 and is usually the memory-mapped image cache that all three
    splits of a dataset share; `rows` (N,) picks this split's images out of it, so a split of a
    dataset larger than memory costs no memory until its batches are read.
    """

    pixels: np.ndarray
    rows: np.ndarray
    labels: np.ndarray
    image_ids: np.ndarray
    patient_ids: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.rows)
        if self.pixels.dtype != np.uint8 or self.pixels.ndim != 3:
            raise ValueError(f"pixels must be uint8 (M, H, W), got {self.pixels.dtype} {self.pixels.shape}")
        if self.rows.ndim != 1 or (n and (self.rows.min() < 0 or self.rows.max() >= len(self.pixels))):
            raise ValueError("rows must be a 1-d array of row numbers of pixels")
        if self.labels.ndim != 2 or self.labels.shape[0] != n or self.labels.shape[1] < 1:
            raise ValueError(f"labels must be ({n}, T) with T ≥ 1 tasks, got {self.labels.shape}")
        if len(self.image_ids) != n or len(self.patient_ids) != n:
            raise ValueError("image_ids and patient_ids must have one entry per image")
        check_labels(self.labels)

    @classmethod
    def from_images(
        cls, images: np.ndarray, labels: np.ndarray, image_ids: np.ndarray, patient_ids: np.ndarray
    ) -> "Split":
        """A split that owns its images (N, H, W) uint8, in order."""
        return cls(images, np.arange(len(images), dtype=np.int64), labels, image_ids, patient_ids)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return self.pixels.shape[1], self.pixels.shape[2]

    def take(self, positions: np.ndarray | slice | list[int]) -> np.ndarray:
        """Images at `positions` of this split as a new (k, H, W) uint8 array (the loader reads
        batches through mtlbench.batches; this is for inspecting a split)."""
        return np.ascontiguousarray(self.pixels[self.rows[positions]])


def check_labels(labels: np.ndarray) -> None:
    """Labels are uint8 in {0, 1}, or float32 in {0, 1, NaN} (NaN: no label); ValueError otherwise."""
    if labels.dtype == np.uint8:
        bad = labels > 1
    elif labels.dtype == np.float32:
        bad = ~(np.isnan(labels) | (labels == 0) | (labels == 1))
    else:
        raise ValueError(f"labels must be uint8 (complete) or float32 with NaN for missing, got {labels.dtype}")
    if bad.any():
        raise ValueError("labels must be 0 or 1 (or NaN for a missing label)")


def labelled(labels: np.ndarray) -> np.ndarray:
    """(N, T) bool: which images have a label for which task."""
    return ~np.isnan(labels) if labels.dtype.kind == "f" else np.ones(labels.shape, bool)


def has_missing(labels: np.ndarray) -> bool:
    """True when some image lacks a label for some task."""
    return labels.dtype.kind == "f" and bool(np.isnan(labels).any())


def positives(labels: np.ndarray) -> np.ndarray:
    """(T,) positives per task among the labelled images."""
    return np.nansum(labels, axis=0, dtype=np.int64) if labels.dtype.kind == "f" else labels.sum(axis=0, dtype=np.int64)


@dataclass(frozen=True)
class DatasetBundle:
    """Train/val/test splits plus provenance (`info`) that is stored with every run."""

    name: str
    train: Split
    val: Split
    test: Split
    info: dict[str, Any] = field(default_factory=dict)
    task_names: tuple[str, ...] = TASK_NAMES
    # other datasets' test splits the selected model is also evaluated on (`--test-dataset`), by dataset name
    cross_tests: dict[str, Split] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, split in self.splits().items():
            if split.labels.shape[1] != len(self.task_names):
                raise ValueError(f"{name} labels have {split.labels.shape[1]} columns for {len(self.task_names)} tasks")

    def splits(self) -> dict[str, Split]:
        """{"train": ..., "val": ..., "test": ...}."""
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def has_missing_labels(self) -> bool:
        """True when some image of some split lacks a label for some task (the losses are then masked)."""
        return any(has_missing(split.labels) for split in self.splits().values())

    def restricted(self, tasks: tuple[str, ...]) -> DatasetBundle:
        """The same images with only the label columns of `tasks` (in this bundle's task order): what a run
        on a task subset, e.g. a single-task baseline, trains and is evaluated on."""
        if tasks == self.task_names:
            return self
        missing = [t for t in tasks if t not in self.task_names]
        if missing:
            raise ValueError(f"tasks {missing} are not among this dataset's {self.task_names}")
        columns = [self.task_names.index(t) for t in tasks]
        splits = {name: replace(split, labels=split.labels[:, columns]) for name, split in self.splits().items()}
        cross = {name: replace(split, labels=split.labels[:, columns]) for name, split in self.cross_tests.items()}
        return replace(self, **splits, task_names=tuple(tasks), cross_tests=cross)


@dataclass(frozen=True)
class DataRequest:
    """What a run (or `mtlbench data`) asks of a dataset loader."""

    data_dir: Path
    image_size: int
    data_seed: int = 0
    val_fraction: float = 0.1
    synth_images: int = 3000  # cxr14-synth: train/val images
    synth_test_images: int = 200  # cxr14-synth: test images (RunConfig's presets set both)
    views: str = "all"
    synth_missing: float = 0.0  # cxr14-synth: the fraction of labels left out (NaN), per task and image, seeded
    synth_shortcuts: bool = False  # cxr14-synth: draw shortcut confounders (another dataset: own folder, fingerprint)
    uncertain: str = "ignore"  # an uncertain (−1) label becomes: ignore = missing (NaN), zeros = 0, ones = 1
    allow_missing: bool = False  # train on the images present; counts go into the run's info
    cache_dir: Path | None = None  # where image caches live; None = under the data root
    download: bool = False  # let the loader fetch the files (chestmnist through medmnist)
    build_cache: bool = True  # False: use a complete cache or fail (`mtlbench data verify`)
    spot_check: int = 0  # re-decode this many cached images from the source and compare


class ProgressFactory(Protocol):
    """Makes a progress callback: `advance = factory(description, total)`; `advance(n)`."""

    def __call__(self, description: str, total: int) -> Callable[[int], None]: ...


def no_progress(description: str, total: int) -> Callable[[int], None]:
    """A ProgressFactory that shows nothing."""
    return lambda n=1: None
