"""Batches for the trainer: seeded order, uint8 → float on the device, device-side augmentation.

Order and augmentation draws depend only on (seed, epoch), never on the method, so every
method of a sweep sees identical batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from mtlbench.datasets.base import Split


def epoch_rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    """An RNG for one purpose (`stream`) of one epoch, independent of everything else."""
    return np.random.default_rng([seed, epoch, stream])


@dataclass
class DeviceSplit:
    """A split's images and labels as tensors (pinned on the host when the device is CUDA)."""

    images: torch.Tensor  # (N, H, W) uint8
    labels: torch.Tensor  # (N, T) float32

    @classmethod
    def from_split(cls, split: Split, device: torch.device) -> "DeviceSplit":
        """Wrap a dataset split without copying more than needed."""
        images = torch.from_numpy(np.ascontiguousarray(split.images))
        labels = torch.from_numpy(split.labels.astype(np.float32))
        if device.type == "cuda":
            images, labels = images.pin_memory(), labels.pin_memory()
        return cls(images, labels)

    def __len__(self) -> int:
        return self.images.shape[0]


def to_model_input(images: torch.Tensor, device: torch.device, mean: float, std: float) -> torch.Tensor:
    """uint8 (B, H, W) → normalized float (B, 1, H, W) on `device`."""
    x = images.to(device, non_blocking=True).unsqueeze(1).float().div_(255.0)
    return x.sub_(mean).div_(std)


def paper_augmentation(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """RandomRotation(30) + RandomResizedCrop(scale 0.08–1, ratio 3/4–4/3) + horizontal flip.

    The DeepChest authors' torchvision pipeline, applied to the whole batch on the device as one
    affine resampling (rotation of the crop window, bilinear, zero fill outside the image).
    """
    b = x.shape[0]
    angle = np.deg2rad(rng.uniform(-30.0, 30.0, b))
    area = rng.uniform(0.08, 1.0, b)
    ratio = np.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3), b))
    w = np.minimum(np.sqrt(area * ratio), 1.0)
    h = np.minimum(np.sqrt(area / ratio), 1.0)
    cx = rng.uniform(-(1 - w), 1 - w)
    cy = rng.uniform(-(1 - h), 1 - h)
    flip = np.where(rng.random(b) < 0.5, -1.0, 1.0)
    cos, sin = np.cos(angle), np.sin(angle)
    theta = np.stack(
        [np.stack([cos * w * flip, -sin * h, cx], 1), np.stack([sin * w * flip, cos * h, cy], 1)], 1
    )
    theta_t = torch.as_tensor(theta, dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta_t, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def train_batches(
    split: DeviceSplit,
    batch_size: int,
    seed: int,
    epoch: int,
    device: torch.device,
    mean: float,
    std: float,
    augment: str,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled full batches of one epoch (the ragged last batch is dropped, as BatchNorm needs > 1)."""
    order = torch.from_numpy(epoch_rng(seed, epoch, 0).permutation(len(split)))
    aug_rng = epoch_rng(seed, epoch, 1)
    for start in range(0, len(split) - batch_size + 1, batch_size):
        idx = order[start : start + batch_size]
        x = to_model_input(split.images[idx], device, mean, std)
        if augment == "paper":
            x = paper_augmentation(x, aug_rng)
        yield x, split.labels[idx].to(device, non_blocking=True)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of training steps in one epoch."""
    return n // batch_size


def eval_batches(
    split: DeviceSplit, batch_size: int, device: torch.device, mean: float, std: float
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """All images of a split in order, unaugmented."""
    for start in range(0, len(split), batch_size):
        x = to_model_input(split.images[start : start + batch_size], device, mean, std)
        yield x, split.labels[start : start + batch_size].to(device, non_blocking=True)
