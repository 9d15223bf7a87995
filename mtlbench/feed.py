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
    """A split as the trainer reads it: rows of the uint8 pixel store and float labels on the host.

    Batches are gathered from the (memory-mapped) store on the host as uint8, then copied to the
    device (through pinned memory on CUDA), where they are converted and augmented.
    """

    pixels: np.ndarray  # (M, H, W) uint8, shared by the splits of a dataset
    rows: np.ndarray  # (N,) rows of `pixels` in this split
    labels: torch.Tensor  # (N, T) float32
    pin: bool

    @classmethod
    def from_split(cls, split: Split, device: torch.device) -> "DeviceSplit":
        """Wrap a dataset split without reading its pixels."""
        labels = torch.from_numpy(split.labels.astype(np.float32))
        return cls(split.pixels, np.asarray(split.rows, dtype=np.int64), labels, device.type == "cuda")

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, positions: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images (B, H, W), float labels (B, T)) of `positions`, on `device`."""
        images = torch.from_numpy(np.ascontiguousarray(self.pixels[self.rows[positions]]))
        labels = self.labels[torch.from_numpy(np.asarray(positions))]
        if self.pin:
            images, labels = images.pin_memory(), labels.pin_memory()
        return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def to_model_input(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 (B, H, W) → normalized float (B, 1, H, W) on the images' device."""
    x = images.unsqueeze(1).float().div_(255.0)
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
    return _resample(x, theta)


def light_augmentation(x: torch.Tensor, rng: np.random.Generator, hflip: bool) -> torch.Tensor:
    """Rotation ±10°, scale 0.9–1.1, shift ±6% of the image; horizontal flip only if `hflip`.

    Mild enough to keep anatomy plausible; no flip by default because the heart's side carries
    meaning (Cardiomegaly, situs). One affine resampling of the whole batch on the device.
    """
    b = x.shape[0]
    angle = np.deg2rad(rng.uniform(-10.0, 10.0, b))
    scale = rng.uniform(0.9, 1.1, b)
    tx, ty = rng.uniform(-0.06, 0.06, (2, b)) * 2  # affine_grid spans [-1, 1]
    flip = np.where(rng.random(b) < 0.5, -1.0, 1.0) if hflip else np.ones(b)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    theta = np.stack([np.stack([cos * flip, -sin, tx], 1), np.stack([sin * flip, cos, ty], 1)], 1)
    return _resample(x, theta)


def _resample(x: torch.Tensor, theta: np.ndarray) -> torch.Tensor:
    theta_t = torch.as_tensor(theta, dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta_t, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_batch(x: torch.Tensor, augment: str, rng: np.random.Generator, hflip: bool = False) -> torch.Tensor:
    """Apply the named augmentation ("none" | "light" | "paper") to a normalized batch."""
    if augment == "paper":
        return paper_augmentation(x, rng)
    if augment == "light":
        return light_augmentation(x, rng, hflip)
    if hflip:
        flip = torch.from_numpy(rng.random(x.shape[0]) < 0.5).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def train_batches(
    split: DeviceSplit,
    batch_size: int,
    seed: int,
    epoch: int,
    device: torch.device,
    mean: float,
    std: float,
    augment: str,
    hflip: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled full batches of one epoch (the ragged last batch is dropped, as BatchNorm needs > 1)."""
    order = epoch_rng(seed, epoch, 0).permutation(len(split))
    aug_rng = epoch_rng(seed, epoch, 1)
    for start in range(0, len(split) - batch_size + 1, batch_size):
        images, labels = split.batch(order[start : start + batch_size], device)
        yield augment_batch(to_model_input(images, mean, std), augment, aug_rng, hflip), labels


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of training steps in one epoch."""
    return n // batch_size


def eval_batches(
    split: DeviceSplit, batch_size: int, device: torch.device, mean: float, std: float
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """All images of a split in order, unaugmented."""
    for start in range(0, len(split), batch_size):
        images, labels = split.batch(np.arange(start, min(start + batch_size, len(split))), device)
        yield to_model_input(images, mean, std), labels
