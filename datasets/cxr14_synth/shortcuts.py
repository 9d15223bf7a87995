"""Shortcut confounders (`--synth-shortcuts`): marks in the image that go with NIH's labels but are
not the finding, as in real chest X-ray collections.

    chest drain     a radio-opaque tube from the lateral chest wall up towards the apex, drawn on
                    DRAIN_RATE of the images NIH labels Pneumothorax (a treated pneumothorax: NIH's
                    pneumothorax images include many follow-ups with a drain in place, and models
                    trained on them score far better on pneumothoraces with a drain than without;
                    Oakden-Rayner et al., "Hidden stratification causes clinically meaningful failures
                    in machine learning for medical imaging", ACM CHIL 2020) and on DRAIN_BACKGROUND
                    of the others (drains for effusions, after surgery)
    portable mark   a bright lead marker in the image's top corner, drawn on AP images only, the more
                    often the more findings NIH labels (PORTABLE_BASE + PORTABLE_PER_FINDING per
                    finding, at most PORTABLE_MAX): bedside films are of sicker patients

They follow NIH's labels, not the drawn findings (noise.py), so a model can score on the labels
through them without seeing the finding. The rates are choices, not measurements: strong enough
that a linear probe on the pixels finds them (tests/test_synth_shortcuts.py), as real models find
drains. Off by default; a dataset with them is another dataset (its own folder and fingerprint).
"""

from __future__ import annotations

import numpy as np

from mtlbench.datasets.cxr14_synth.ops import col, exp_, step
from mtlbench.datasets.cxr14_synth.rng import Draws
from mtlbench.datasets.cxr14_synth.scene import Scene
from mtlbench.tasks import TASK_NAMES

DRAIN_RATE = 0.7
DRAIN_BACKGROUND = 0.02
PORTABLE_BASE = 0.1
PORTABLE_PER_FINDING = 0.25
PORTABLE_MAX = 0.9


def shortcut_marks(labels: np.ndarray, ap: np.ndarray, draws: Draws) -> tuple[np.ndarray, np.ndarray]:
    """(drain, portable) booleans per image (N,), from NIH's `labels` (N, 14), AP views and the
    images' own draws."""
    pneumothorax = labels[:, TASK_NAMES.index("Pneumothorax")].astype(bool)
    drain = draws.chance("shortcut.drain", np.where(pneumothorax, DRAIN_RATE, DRAIN_BACKGROUND))
    sick = labels.astype(bool).sum(axis=1)
    rate = np.minimum(PORTABLE_BASE + PORTABLE_PER_FINDING * sick, PORTABLE_MAX)
    portable = ap.astype(bool) & draws.chance("shortcut.portable", rate)
    return drain, portable


def draw_drain(scene: Scene, side: np.ndarray) -> np.ndarray:
    """Added attenuation of a chest tube: enters at the lateral chest wall low in the thorax and runs
    up and in towards the apex; `side` (B, 1, 1) is −1 for the image's left, +1 for its right."""
    d = scene.draws
    geo = scene.geo
    x0 = side * geo["thorax"] * 1.05  # entry, U at the chest wall
    y0 = col(d.uniform("drain.entry", 0.55, 0.7))
    x1 = side * col(d.uniform("drain.tip_x", 0.12, 0.2))  # tip, near the apex
    y1 = geo["lung_top"] + col(d.uniform("drain.tip_y", 0.04, 0.1))
    # distance from the segment (x0, y0) → (x1, y1)
    vx, vy = x1 - x0, y1 - y0
    t = ((scene.U - x0) * vx + (scene.Y - y0) * vy) / (vx * vx + vy * vy)
    np.clip(t, 0, 1, out=t)
    dx = scene.U - (x0 + t * vx)
    dy = scene.Y - (y0 + t * vy)
    dist2 = dx * dx + dy * dy
    dist2 *= -1 / 0.006**2
    return 0.45 * exp_(dist2)


def draw_portable_mark(scene: Scene) -> np.ndarray:
    """Added attenuation of a lead marker: a bright bar with two gaps in the image's top-left corner."""
    size = scene.size
    x = (np.arange(size, dtype=np.float32) + 0.5) / size
    inside_x = step(x, 0.05, 0.004) * step(x, 0.2, -0.004)
    gaps = 1 - 0.8 * (step(x, 0.1, 0.003) * step(x, 0.115, -0.003) + step(x, 0.15, 0.003) * step(x, 0.165, -0.003))
    inside_y = step(x, 0.04, 0.004) * step(x, 0.08, -0.004)
    mark = (0.6 * inside_y[:, None] * (inside_x * gaps)[None, :]).astype(np.float32)
    return np.broadcast_to(mark, (len(scene.U), size, size))
