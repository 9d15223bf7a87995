"""Counter-based random numbers: each value is a hash of (seed, key, stream name).

A key is an image (`image_keys`) or a patient; a stream names what is drawn ("rotate",
"label.Mass", ...). So a value never depends on which other images are drawn with it, in what
order or in what chunk: rendering is the same whatever the chunking or thread count.
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np


def image_keys(image_names: Any) -> np.ndarray:
    """A 64-bit key per image name (stable across runs and platforms)."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(str(n).encode(), digest_size=8).digest(), "little") for n in image_names],
        dtype=np.uint64,
    )


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class Draws:
    """Random numbers that are a hash of (seed, key, stream name): one value per key."""

    seed: int
    keys: np.ndarray

    @functools.cached_property
    def _mixed(self) -> np.ndarray:
        """The (seed, key) part of the hash, shared by every stream."""
        base = _splitmix(np.array([self.seed], dtype=np.uint64))
        return _splitmix(base ^ self.keys.astype(np.uint64))

    def uniform(self, stream: str, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        h = _splitmix(self._mixed ^ np.uint64(zlib.crc32(stream.encode())))
        u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
        return low + (high - low) * u

    def normal(self, stream: str, sd: float = 1.0, clip: float = 3.0) -> np.ndarray:
        u1 = self.uniform(stream + "/a")
        u2 = self.uniform(stream + "/b")
        z = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
        return sd * np.clip(z, -clip, clip)

    def chance(self, stream: str, p: float | np.ndarray) -> np.ndarray:
        return self.uniform(stream) < p

    def take(self, idx: np.ndarray | slice) -> "Draws":
        taken = Draws(self.seed, self.keys[idx])
        if "_mixed" in self.__dict__:
            taken.__dict__["_mixed"] = self._mixed[idx]
        return taken
