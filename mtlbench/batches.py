"""Batches for the trainer: seeded order, uint8 → float on the device, device-side augmentation.

Order and augmentation draws depend only on (seed, epoch), never on the method, so every
method of a sweep sees identical batches.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from queue import Empty, Full, Queue
from typing import Iterator, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from mtlbench.backend import prepare_input
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
    _copy_stream: "torch.cuda.Stream | None" = field(default=None, init=False, repr=False)

    @classmethod
    def from_split(cls, split: Split, device: torch.device) -> "DeviceSplit":
        """Wrap a dataset split without reading its pixels."""
        labels = torch.from_numpy(split.labels.astype(np.float32))
        return cls(split.pixels, np.asarray(split.rows, dtype=np.int64), labels, device.type == "cuda")

    def copy_stream(self, device: torch.device) -> "torch.cuda.Stream | None":
        """The side stream host→device copies of this split go on (one per split, created on first use)."""
        if device.type != "cuda":
            return None
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(device)
        return self._copy_stream

    def __len__(self) -> int:
        return len(self.rows)

    def host_batch(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images (B, H, W), float labels (B, T)) of `positions` on the host.

        With `pin`, the images are gathered straight into pinned memory (PyTorch's caching host
        allocator reuses such blocks only after the copies that read them have finished).
        """
        rows = self.rows[positions]
        images = torch.empty((len(rows), *self.pixels.shape[1:]), dtype=torch.uint8, pin_memory=self.pin)
        np.take(self.pixels, rows, axis=0, out=images.numpy(), mode="clip")  # rows are valid; "clip" skips a buffer
        labels = self.labels[torch.from_numpy(np.asarray(positions))]
        return images, labels.pin_memory() if self.pin else labels


T = TypeVar("T")
_DONE = object()


def prefetched(source: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Items of `source`, produced by a background thread up to `depth` items ahead.

    The order is unchanged (one producer); an exception in the producer is raised here; a
    consumer that stops early stops the producer.
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        queue.put((item, None), timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer
            queue.put((_DONE, exc))

    worker = threading.Thread(target=produce, name="mtlbench-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = queue.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                queue.get_nowait()
            except Empty:
                pass
            worker.join(timeout=0.05)


def _device_batches(
    split: DeviceSplit, position_batches: Iterator[np.ndarray], device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of `position_batches` on `device`, gathered and copied one or two batches ahead.

    On CUDA the background thread copies on its own stream; the consumer's stream waits for
    that copy (an event, not a host sync) before using the batch.
    """
    copy_stream = split.copy_stream(device)

    def produce() -> Iterator[tuple[torch.Tensor, torch.Tensor, object]]:
        for positions in position_batches:
            images, labels = split.host_batch(positions)
            if copy_stream is None:
                yield images.to(device), labels.to(device), None
                continue
            with torch.cuda.stream(copy_stream):
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record(copy_stream)
            yield images, labels, ready

    for images, labels, ready in prefetched(produce()):
        if ready is not None:
            current = torch.cuda.current_stream(device)
            current.wait_event(ready)
            images.record_stream(current)
            labels.record_stream(current)
        yield images, labels


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
    theta = np.stack([np.stack([cos * w * flip, -sin * h, cx], 1), np.stack([sin * w * flip, cos * h, cy], 1)], 1)
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


def host_to_device(array: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A small host array on `device` without a host sync: through pinned memory, non-blocking, on CUDA."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device=device, dtype=dtype, non_blocking=True)


def _resample(x: torch.Tensor, theta: np.ndarray) -> torch.Tensor:
    theta_t = host_to_device(theta, x.device, x.dtype)
    grid = F.affine_grid(theta_t, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_batch(x: torch.Tensor, augment: str, rng: np.random.Generator, hflip: bool = False) -> torch.Tensor:
    """Apply the named augmentation ("none" | "light" | "paper") to a normalized batch."""
    if augment == "paper":
        return paper_augmentation(x, rng)
    if augment == "light":
        return light_augmentation(x, rng, hflip)
    if hflip:
        flip = host_to_device(rng.random(x.shape[0]) < 0.5, x.device)
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
    starts = range(0, len(split) - batch_size + 1, batch_size)
    positions = (order[start : start + batch_size] for start in starts)
    for images, labels in _device_batches(split, positions, device):
        yield prepare_input(augment_batch(to_model_input(images, mean, std), augment, aug_rng, hflip)), labels


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of training steps in one epoch."""
    return n // batch_size


def eval_batches(
    split: DeviceSplit,
    batch_size: int,
    device: torch.device,
    mean: float,
    std: float,
    augment: str = "none",
    rng: np.random.Generator | None = None,
    hflip: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """All images of a split in order, unaugmented unless `augment` (`--augment-eval`: the DeepChest authors'
    evaluation, which applied the training transform to validation and test images, drawn from `rng`)."""
    positions = (np.arange(start, min(start + batch_size, len(split))) for start in range(0, len(split), batch_size))
    for images, labels in _device_batches(split, positions, device):
        x = to_model_input(images, mean, std)
        if augment != "none":
            x = augment_batch(x, augment, rng if rng is not None else np.random.default_rng(0), hflip)
        yield prepare_input(x), labels
