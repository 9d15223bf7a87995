"""Images from NIH metadata rows: chunks rendered on threads, a block of images at a time
(anatomy, then finding signatures, then the film response)."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Mapping

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from mtlbench.datasets.cxr14_synth.anatomy import draw_anatomy, sample_anatomy
from mtlbench.datasets.cxr14_synth.agreement import nih_label_matrix
from mtlbench.datasets.cxr14_synth.findings import LESIONS, apply_shape_findings, finding_side
from mtlbench.datasets.cxr14_synth.latent import group_severity, signature_amounts
from mtlbench.datasets.cxr14_synth.nih_sample import read_nih_boxes
from mtlbench.datasets.cxr14_synth.ops import col
from mtlbench.datasets.cxr14_synth.params import FINDING_STRENGTH
from mtlbench.datasets.cxr14_synth.rng import Draws, image_keys
from mtlbench.datasets.cxr14_synth.scene import Scene, draw_noise
from mtlbench.datasets.cxr14_synth.shortcuts import draw_drain, draw_portable_mark, shortcut_marks
from mtlbench.tasks import TASK_NAMES

_PIXEL_BUDGET = 1 << 20  # pixels rendered at once; bounds memory at any image size
_BLOCK_PIXELS = 1 << 17  # pixels drawn at once within a chunk (see _render_chunk)
_MAX_THREADS = 8


@dataclass(frozen=True)
class Look:
    """What every image of one generation shares: its size, the dataset seed, each finding's
    signature strength, NIH's bounding boxes per finding (where lesions are drawn), and whether
    shortcut confounders are drawn (shortcuts.py; they need NIH's "Finding Labels" in the rows)."""

    size: int
    seed: int
    strength: Mapping[str, float]
    boxes: Mapping[str, np.ndarray]
    shortcuts: bool = False


def render_images(
    rows: pd.DataFrame,
    rendered: np.ndarray,
    size: int,
    seed: int,
    strength: Mapping[str, float] = FINDING_STRENGTH,
    boxes: Mapping[str, np.ndarray] | None = None,
    shortcuts: bool = False,
) -> np.ndarray:
    """Render (N, size, size) uint8 radiographs for NIH metadata rows.

    `rendered` (N, 14) says which finding signatures to draw (see noise.render_labels); `rows` needs
    Image Index, Patient ID, Patient Age, Patient Gender (or Sex) and View Position.
    """
    look = Look(size, seed, strength, read_nih_boxes() if boxes is None else boxes, shortcuts)
    out = np.empty((len(rows), size, size), dtype=np.uint8)
    for start, stop, images in render_stream(rows, rendered, look):
        out[start:stop] = images
    return out


def render_stream(rows: pd.DataFrame, rendered: np.ndarray, look: Look) -> Iterator[tuple[int, int, np.ndarray]]:
    """(start, stop, images) per chunk, in order; chunks render on worker threads.

    numpy releases the GIL inside large array operations, so threads use every core; at most
    a few chunks are held in memory ahead of the consumer. BLAS is held to one thread meanwhile
    (process-wide, until the stream ends): chunks already use every core, and BLAS threads in
    each chunk's small noise-field products only oversubscribe them (on the 2-core development
    machine, with another process busy, they ran ~25x slower).
    """
    workers = max(1, min(_MAX_THREADS, os.cpu_count() or 1))
    chunks = iter(_chunks(len(rows), look.size))
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=workers) as pool:
        ahead: deque = deque()
        while True:
            while len(ahead) <= workers and (chunk := next(chunks, None)) is not None:
                start, stop = chunk
                job = pool.submit(_render_chunk, rows.iloc[start:stop], rendered[start:stop], look)
                ahead.append((start, stop, job))
            if not ahead:
                return
            start, stop, job = ahead.popleft()
            yield start, stop, job.result()


def _render_chunk(rows: pd.DataFrame, has: np.ndarray, look: Look) -> np.ndarray:
    """Images for a chunk: per-image draws for all rows at once, then pixels a block at a time.

    A block is about _BLOCK_PIXELS pixels: its (B, H, W) float32 temporaries (1 MiB each) mostly
    stay in the CPU cache, and each numpy call on them still runs long enough that render threads
    seldom wait on each other for the GIL between calls.
    """
    size, seed = look.size, look.seed
    keys = image_keys(rows["Image Index"])
    draws = Draws(seed, keys)
    patient = Draws(seed, rows["Patient ID"].to_numpy().astype(np.uint64) ^ np.uint64(0xA5A5_0000_0000))
    geo = sample_anatomy(rows, patient, draws)
    severity = group_severity(draws)
    amounts = signature_amounts(has, severity)
    apply_shape_findings(geo, amounts, draws, look.strength, look.boxes, severity)
    marks = _shortcut_marks(rows, geo, draws, look) if look.shortcuts else None
    film = _film(geo, draws)
    pixel_noise, fields = draw_noise(keys, seed, size)
    images = np.empty(pixel_noise.shape, dtype=np.uint8)
    per_block = max(1, _BLOCK_PIXELS // (size * size))
    for start in range(0, len(keys), per_block):
        block = slice(start, start + per_block)
        scene, base, markings = draw_anatomy(
            {k: v[block] for k, v in geo.items()},
            {k: v[block] for k, v in fields.items()},
            draws.take(block),
            size,
        )
        _paint_findings(scene, base, markings, amounts[block], look)
        if marks is not None:
            _paint_shortcuts(scene, base, *(m[block] for m in marks))
        base += markings
        image = _expose(base, pixel_noise[block], {k: v[block] for k, v in film.items()})
        image *= 255
        images[block] = np.rint(image, out=image)
    return images


def _paint_findings(
    scene: Scene,
    base: np.ndarray,
    markings: np.ndarray,
    amounts: np.ndarray,
    look: Look,
) -> None:
    """Add each finding's signature to `base` (and scale `markings`) in the images that have it, at
    its strength × the image's amount of it (latent.signature_amounts)."""
    for task, paint in LESIONS.items():
        t = TASK_NAMES.index(task)
        idx = np.flatnonzero(amounts[:, t])
        if idx.size:
            add, keep_markings = paint(
                scene.take(idx), col(look.strength[task] * amounts[idx, t]), look.boxes.get(task)
            )
            base[idx] += add
            if keep_markings is not None:
                markings[idx] *= keep_markings


def _shortcut_marks(
    rows: pd.DataFrame, geo: dict[str, np.ndarray], draws: Draws, look: Look
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(drain, portable mark, drain side) per image of a chunk: from NIH's labels in `rows`."""
    labels = nih_label_matrix(rows["Finding Labels"]).to_numpy()
    drain, portable = shortcut_marks(labels, geo["ap"].ravel(), draws)
    return drain, portable, finding_side(draws, "Pneumothorax", look.boxes.get("Pneumothorax"))


def _paint_shortcuts(scene: Scene, base: np.ndarray, drain: np.ndarray, portable: np.ndarray, side: np.ndarray) -> None:
    """Add the chest drains and portable marks of a block's images to `base`."""
    idx = np.flatnonzero(drain)
    if idx.size:
        base[idx] += draw_drain(scene.take(idx), col(side[idx]))
    idx = np.flatnonzero(portable)
    if idx.size:
        base[idx] += draw_portable_mark(scene.take(idx))


def _chunks(count: int, size: int) -> list[tuple[int, int]]:
    """(start, stop) of each chunk: about _PIXEL_BUDGET pixels, at least one image."""
    step = max(1, _PIXEL_BUDGET // (size * size))
    return [(start, min(start + step, count)) for start in range(0, count, step)]


def _film(geo: dict[str, np.ndarray], draws: Draws) -> dict[str, np.ndarray]:
    """Film response per exposure, (B, 1, 1) each: contrast, brightness, gamma, gradient, noise level."""
    ap = geo["ap"]
    return {
        "contrast": col(draws.uniform("contrast", 0.85, 1.2)) * (1 - 0.1 * ap),
        "brightness": col(draws.normal("brightness", 0.04)),
        "gamma": col(np.exp(draws.normal("gamma", 0.12))),
        "ramp": col(draws.normal("ramp", 0.04)),
        "sigma": col(draws.uniform("noise", 0.01, 0.03)) * (1 + 0.3 * ap),
    }


def _expose(attenuation: np.ndarray, pixel_noise: np.ndarray, film: dict[str, np.ndarray]) -> np.ndarray:
    """Film response: brightness, contrast, gamma, a slow gradient, and noise; in [0, 1].

    Works in place: `attenuation` becomes the image and `pixel_noise` is scaled.
    """
    size = attenuation.shape[-1]
    ramp = (np.arange(size, dtype=np.float32) / size - 0.5)[None, None, :] * film["ramp"]
    image = attenuation  # clip(0.1 + brightness + ramp + 1.1 contrast × attenuation, 0, 1) ** gamma
    image *= 1.1 * film["contrast"]
    image += 0.1 + film["brightness"] + ramp
    np.clip(image, 0, 1, out=image)
    np.power(image, film["gamma"], out=image)
    pixel_noise *= film["sigma"]
    image += pixel_noise
    return np.clip(image, 0, 1, out=image)
