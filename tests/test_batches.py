"""The training loader: uint8 batches from the pixel store, conversion and augmentation on the device."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from mtlbench.datasets.base import Split
from mtlbench.batches import DeviceSplit, augment_batch, eval_batches, prefetched, to_model_input, train_batches

CPU = torch.device("cpu")


def store_split(n: int = 40, size: int = 16) -> Split:
    """A split of every other row of a larger shared store, as datasets backed by the cache are."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2 * n, size, size), dtype=np.uint8)
    rows = np.arange(1, 2 * n, 2)
    labels = (rng.random((n, 14)) < 0.3).astype(np.uint8)
    return Split(pixels, rows, labels, np.array([f"{i}" for i in range(n)]), np.arange(n))


def test_eval_batches_are_the_split_in_order_normalized() -> None:
    split = store_split()
    xs, ys = zip(*eval_batches(DeviceSplit.from_split(split, CPU), 16, CPU, 0.5, 0.5))
    x, y = torch.cat(xs), torch.cat(ys)
    expected = (torch.from_numpy(split.pixels[split.rows]).float() / 255 - 0.5) / 0.5
    assert x.shape == (40, 1, 16, 16) and torch.allclose(x[:, 0], expected)
    assert torch.equal(y, torch.from_numpy(split.labels).float())


def test_augmented_eval_batches_are_the_training_transform_drawn_from_the_given_rng() -> None:
    """`--augment-eval`: each batch is `augment_batch` of the plain one, with draws from the rng passed in order."""
    device_split = DeviceSplit.from_split(store_split(), CPU)
    plain = [x for x, _ in eval_batches(device_split, 16, CPU, 0.5, 0.5)]
    rng, expected_rng = np.random.default_rng(7), np.random.default_rng(7)
    augmented = [x for x, _ in eval_batches(device_split, 16, CPU, 0.5, 0.5, "paper", rng)]
    for x, p in zip(augmented, plain):
        assert torch.equal(x, augment_batch(p, "paper", expected_rng))
        assert not torch.equal(x, p)


def test_train_batches_are_a_seeded_permutation_without_augmentation_by_default() -> None:
    split = store_split()
    device_split = DeviceSplit.from_split(split, CPU)
    batches = list(train_batches(device_split, 8, seed=3, epoch=0, device=CPU, mean=0.5, std=0.5, augment="none"))
    again = list(train_batches(device_split, 8, seed=3, epoch=0, device=CPU, mean=0.5, std=0.5, augment="none"))
    other_epoch = list(train_batches(device_split, 8, seed=3, epoch=1, device=CPU, mean=0.5, std=0.5, augment="none"))
    assert len(batches) == 5 and all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    assert not torch.equal(batches[0][0], other_epoch[0][0])
    every = torch.cat([x for x, _ in batches])[:, 0]
    all_images = (torch.from_numpy(split.pixels[split.rows]).float() / 255 - 0.5) / 0.5
    matches = [(every[i] == all_images).flatten(1).all(1).nonzero().item() for i in range(40)]
    assert sorted(matches) == list(range(40))  # each image exactly once, unaugmented


def test_light_augmentation_is_mild_and_does_not_flip_unless_asked() -> None:
    x = torch.zeros(64, 1, 32, 32)
    x[:, :, 8:24, 2:10] = 1.0  # a bright block on the image's left
    out = augment_batch(x, "light", np.random.default_rng(0))
    left, right = out[..., :16].sum(dim=(1, 2, 3)), out[..., 16:].sum(dim=(1, 2, 3))
    assert (left > right).all()  # never mirrored
    assert not torch.equal(out[0], out[1])  # per-image draws
    assert (out.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))).sub(1).abs().max() < 0.35  # scale ±10%
    flipped = augment_batch(x, "light", np.random.default_rng(0), hflip=True)
    mirrored = flipped[..., 16:].sum(dim=(1, 2, 3)) > flipped[..., :16].sum(dim=(1, 2, 3))
    assert 10 < mirrored.sum() < 54


def test_hflip_alone_flips_about_half_exactly() -> None:
    x = torch.arange(16.0).reshape(1, 1, 1, 16).repeat(200, 1, 4, 1)
    out = augment_batch(x, "none", np.random.default_rng(1), hflip=True)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped | kept).all() and 70 < flipped.sum() < 130


def test_to_model_input_keeps_the_device_and_normalizes() -> None:
    images = torch.tensor([[[0, 255]]], dtype=torch.uint8)
    assert to_model_input(images, 0.5, 0.5).tolist() == [[[[-1.0, 1.0]]]]


def test_prefetched_keeps_order_and_runs_ahead_of_the_consumer() -> None:
    produced: list[int] = []

    def source():
        for i in range(10):
            produced.append(i)
            yield i

    items = prefetched(source(), depth=2)
    assert next(items) == 0
    time.sleep(0.2)
    assert len(produced) >= 3  # produced while the consumer was busy
    assert list(items) == list(range(1, 10))


def test_prefetched_raises_the_producers_error_in_the_consumer() -> None:
    def source():
        yield 1
        raise ValueError("bad batch")

    items = prefetched(source())
    assert next(items) == 1
    with pytest.raises(ValueError, match="bad batch"):
        next(items)


def test_prefetched_stops_its_thread_when_the_consumer_stops_early() -> None:
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    items = prefetched(endless(), depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    time.sleep(0.1)
    assert not any(t.name == "mtlbench-prefetch" and t.is_alive() for t in threading.enumerate())


def test_host_batch_gathers_the_rows_of_the_store() -> None:
    split = store_split()
    images, labels = DeviceSplit.from_split(split, CPU).host_batch(np.array([3, 0, 7]))
    assert images.dtype == torch.uint8 and np.array_equal(images.numpy(), split.pixels[split.rows[[3, 0, 7]]])
    assert torch.equal(labels, torch.from_numpy(split.labels[[3, 0, 7]]).float())
