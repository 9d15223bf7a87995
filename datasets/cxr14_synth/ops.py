"""Array primitives of the renderer: (B,) values as (B, 1, 1) columns, and smooth steps and
exponentials computed in place in float32."""

from __future__ import annotations

from typing import Any

import numpy as np


def col(values: Any) -> np.ndarray:
    """(B,) values → (B, 1, 1) float32, to broadcast against (B, H, W) images."""
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


# Rendering keeps every (B, H, W) array float32 and works in place where it can: on a 2-core
# CPU each pass over a chunk is memory-bound, so passes (and float64 temporaries) set the speed.
# Python floats and float32 arrays stay float32; bool arrays and numpy float64 scalars would not.


def smoothstep_(t: np.ndarray) -> np.ndarray:
    """In place: t clipped to [0, 1], then 3t² − 2t³."""
    np.clip(t, 0, 1, out=t)
    square = t * t
    t *= -2
    t += 3
    t *= square
    return t


def exp_(x: np.ndarray) -> np.ndarray:
    """In place: exp(x) for x ≤ 0, with x clamped at −70 first.

    exp(−70) ≈ 4e−31 stands in for anything smaller, a difference far below float32 image
    precision; without the clamp exp returns subnormal numbers, several times slower to make
    and to use.
    """
    np.maximum(x, -70, out=x)
    return np.exp(x, out=x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """A logistic-like step (slope 1/4 at 0) that is exactly 0 / 1 beyond |x| = 3; cheap."""
    t = np.multiply(x, np.float32(1 / 6), dtype=np.float32)
    t += np.float32(0.5)
    return smoothstep_(t)


def step(x: np.ndarray, centre: Any, width: Any, out: np.ndarray | None = None) -> np.ndarray:
    """sigmoid((x - centre) / width) in one affine pass; centre, width: floats or (B, 1, 1) float32.

    A negative width flips the step: step(x, c, -w) is sigmoid((c - x) / w). `out` may be x.
    """
    scale = 1 / (6 * width)
    t = np.multiply(x, scale, out=out, dtype=np.float32)
    t += 0.5 - centre * scale
    return smoothstep_(t)
