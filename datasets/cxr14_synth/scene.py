"""A block of images in the patient's frame (grids, anatomy, noise fields), and the per-image
noise it draws on: pixel noise and low-resolution fields, each from the image's own RNG."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from mtlbench.datasets.cxr14_synth.rng import Draws


@dataclass(frozen=True)
class Scene:
    """A block of images in the patient's frame: grids, anatomy and fields, all (B, H, W)."""

    U: np.ndarray  # horizontal position from the midline, -0.5 = image left (patient's right)
    Y: np.ndarray  # vertical position, 0 = top
    geo: dict[str, np.ndarray]  # per-image anatomy, each (B, 1, 1)
    lung: np.ndarray  # soft lung mask, heart excluded
    rim: np.ndarray  # distance inside the lung from its lateral/apical border
    fields: dict[str, np.ndarray]  # per-image low-resolution noise grids (B, g, g)
    draws: Draws
    size: int

    def dx(self, cx: np.ndarray) -> np.ndarray:
        """X − cx, for a horizontal image position cx (0 = image left), (B, 1, 1)."""
        return self.U - (cx - np.float32(0.5))

    def take(self, idx: np.ndarray) -> "Scene":
        return Scene(
            U=self.U[idx],
            Y=self.Y[idx],
            geo={k: v[idx] for k, v in self.geo.items()},
            lung=self.lung[idx],
            rim=self.rim[idx],
            fields={k: v[idx] for k, v in self.fields.items()},
            draws=self.draws.take(idx),
            size=self.size,
        )

    def field(self, name: str) -> np.ndarray:
        """Low-resolution noise grid `name` smoothly upsampled to the image, unit variance."""
        low = self.fields[name]
        k = _upsampler(self.size, low.shape[-1])
        return k @ low @ k.T


def _field_grids(size: int) -> dict[str, int]:
    """Cells per side of each noise grid: vessel markings and fibrosis net scale with size."""
    fine = int(np.clip(size // 4, 8, 28))
    return {"markings": fine, "patch": 10, "fine": fine}


def draw_noise(keys: np.ndarray, seed: int, size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-image pixel noise (B, H, W) and low-resolution noise grids, each from the image's own RNG."""
    grids = _field_grids(size)
    n_low = sum(g * g for g in grids.values())
    pixel = np.empty((len(keys), size, size), dtype=np.float32)
    low = np.empty((len(keys), n_low), dtype=np.float32)
    for i, key in enumerate(keys):
        rng = np.random.default_rng([seed, int(key)])
        pixel[i] = rng.standard_normal((size, size), dtype=np.float32)
        low[i] = rng.standard_normal(n_low, dtype=np.float32)
    fields, start = {}, 0
    for name, g in grids.items():
        fields[name] = low[:, start : start + g * g].reshape(-1, g, g)
        start += g * g
    return pixel, fields


@functools.lru_cache(maxsize=16)
def _upsampler(size: int, grid: int) -> np.ndarray:
    """(size, grid) Gaussian interpolation matrix (read-only); k @ F @ k.T keeps unit variance.

    Weights below 1e-12 are set to 0: they change no float32 result beyond rounding, and as
    float32 they would be (or make) subnormal numbers, which make the matrix products ~15x slower.
    """
    x = (np.arange(size) + 0.5) / size
    c = (np.arange(grid) + 0.5) / grid
    k = np.exp(-(((x[:, None] - c[None, :]) * grid) ** 2))
    k /= np.sqrt((k**2).sum(axis=1, keepdims=True))
    k[k < 1e-12] = 0
    k = k.astype(np.float32)
    k.setflags(write=False)
    return k
