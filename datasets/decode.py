"""Decoding source images to square uint8 grayscale at one size (runs in cache-builder workers).

Kept free of heavy imports (no torch, no pandas): worker processes import only this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})

DecodedChunk = tuple[np.ndarray, dict[int, str]]
"""(images (k, S, S) uint8, {position in the chunk: why that image could not be read})."""


class UnreadableImage(Exception):
    """A source image that exists but cannot be decoded (truncated, corrupt, not an image)."""


def to_grayscale(img: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit `L`; 16-bit values map 0..65535 → 0..255 (scaled, not clipped)."""
    if img.mode == "L":
        return img.copy()
    if img.mode in SIXTEEN_BIT_MODES:
        wide = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    return img.convert("L")


def resize_square(gray: Image.Image, size: int) -> np.ndarray:
    """(size, size) uint8: area averaging (box filter) when shrinking, bilinear when enlarging."""
    if gray.size != (size, size):
        shrinking = gray.width >= size and gray.height >= size
        resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
        gray = gray.resize((size, size), resample)
    return np.asarray(gray, dtype=np.uint8)


def decode_grayscale(path: str | Path, size: int) -> np.ndarray:
    """One image file as (size, size) uint8 grayscale; UnreadableImage if it cannot be decoded."""
    try:
        with Image.open(path) as img:
            gray = to_grayscale(img)
    except FileNotFoundError:
        raise
    except Exception as err:  # Pillow raises OSError, SyntaxError, zlib.error, ValueError, ...
        raise UnreadableImage(f"{type(err).__name__}: {err}") from None
    return resize_square(gray, size)


def decode_files(paths: Sequence[str], size: int) -> DecodedChunk:
    """Decode `paths`; an unreadable or vanished file gives a zero image and its reason."""
    images = np.zeros((len(paths), size, size), dtype=np.uint8)
    errors: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            images[i] = decode_grayscale(path, size)
        except UnreadableImage as err:
            errors[i] = str(err)
        except OSError as err:
            errors[i] = f"{type(err).__name__}: {err.strerror or err}"
    return images, errors


def resize_arrays(images: np.ndarray, size: int) -> DecodedChunk:
    """(k, h, w) uint8 arrays resized to (k, size, size) the way `resize_square` does."""
    if images.shape[1:] == (size, size):
        return np.array(images, dtype=np.uint8), {}
    out = np.stack([resize_square(Image.fromarray(np.asarray(im, dtype=np.uint8), mode="L"), size) for im in images])
    return out, {}
