"""Finding signatures: a painter per finding that adds attenuation on top of the anatomy
(Cardiomegaly and Emphysema reshape the anatomy instead: `apply_shape_findings`). The eight
findings with NIH boxes are placed at a sampled real box."""

from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np

from mtlbench.datasets.cxr14_synth.latent import cardiac_drive
from mtlbench.datasets.cxr14_synth.ops import col, exp_, sigmoid, step
from mtlbench.datasets.cxr14_synth.rng import Draws
from mtlbench.datasets.cxr14_synth.scene import Scene
from mtlbench.tasks import TASK_NAMES

Paint = Callable[[Scene, np.ndarray, "np.ndarray | None"], "tuple[np.ndarray, np.ndarray | None]"]
"""A painter gets the images that have its finding, its strength per image (B, 1, 1) and NIH's boxes
of the finding, and returns (added attenuation, factor on vessel markings or None for unchanged)."""

AIRSPACE_BOXES = ("Infiltration", "Pneumonia")  # NIH has boxes for these airspace findings, none for Consolidation


def apply_shape_findings(
    geo: dict[str, np.ndarray],
    amounts: np.ndarray,
    draws: Draws,
    strength: Mapping[str, float],
    boxes: Mapping[str, np.ndarray],
    severity: Mapping[str, np.ndarray],
) -> None:
    """What findings change in the anatomy rather than add as an opacity: Cardiomegaly and Emphysema
    reshape it, a drawn cardiac finding congests the vessels and (without cardiomegaly) enlarges the
    heart a little (latent.cardiac_drive), and the airspace findings' shared place is drawn
    (geo["airspace_x"], geo["airspace_y"]; see airspace_centre). `amounts` (N, 14) is how strongly
    each finding is drawn (latent.signature_amounts)."""
    congestion, heart_trace = cardiac_drive(amounts, severity)
    cardio = col(amounts[:, TASK_NAMES.index("Cardiomegaly")] + heart_trace)
    box = _pick_boxes(draws, "Cardiomegaly", boxes.get("Cardiomegaly"))
    grow = cardio * strength["Cardiomegaly"] * 0.45 * col(box[:, 2] / 0.469)
    geo["heart_x"] = (
        geo["heart_x"] + np.minimum(cardio, 1) * 0.4 * col(box[:, 0] - 0.575) + 0.35 * grow * geo["heart_a"]
    )
    geo["heart_a"] = geo["heart_a"] * (1 + grow)
    geo["heart_b"] = geo["heart_b"] * (1 + 0.55 * grow)
    emph = col(amounts[:, TASK_NAMES.index("Emphysema")]) * strength["Emphysema"]
    geo["lung_base"] = geo["lung_base"] + 0.035 * emph
    geo["dome"] = geo["dome"] * (1 - 0.6 * emph)
    geo["thorax"] = geo["thorax"] * (1 + 0.02 * emph)
    geo["air"] = geo["air"] * (1 + 0.12 * emph)
    geo["markings"] = geo["markings"] * (1 - 0.6 * emph) * (1 + col(congestion))
    geo["heart_a"] = geo["heart_a"] * (1 - 0.15 * emph)
    pool = [b for task in AIRSPACE_BOXES if (b := boxes.get(task)) is not None and len(b)]
    shared = _pick_boxes(draws, "airspace", np.concatenate(pool) if pool else None)
    geo["airspace_x"], geo["airspace_y"] = col(shared[:, 0]), col(shared[:, 1])


def airspace_centre(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Where the image's airspace findings (Consolidation, Pneumonia, Infiltration) sit: one real
    NIH box centre per image, drawn from the Infiltration and Pneumonia boxes together, moved inside
    the lung; shared, so that findings of one airspace process overlap (latent.py)."""
    geo = scene.geo
    box = np.column_stack([geo["airspace_x"].ravel(), geo["airspace_y"].ravel()])
    return _box_in_lung(scene, box)


def _pick_boxes(draws: Draws, task: str, boxes: np.ndarray | None) -> np.ndarray:
    """One real box per image (k, 4): centre x, centre y, w, h; a neutral box where none exist."""
    if boxes is None or len(boxes) == 0:
        return np.tile([0.5, 0.5, 0.47, 0.37], (len(draws.keys), 1))
    pick = np.minimum((draws.uniform(f"box.{task}") * len(boxes)).astype(np.int64), len(boxes) - 1)
    return boxes[pick]


def finding_side(draws: Draws, task: str, boxes: np.ndarray | None) -> np.ndarray:
    """(B,) −1 where the finding's real box (the one its painter draws at) is on the image's left, else +1."""
    return np.where(_pick_boxes(draws, task, boxes)[:, 0] < 0.5, -1.0, 1.0)


def _ellipse(scene: Scene, cx: np.ndarray, cy: np.ndarray, rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Normalised elliptic radius: < 1 inside."""
    r = scene.dx(cx)
    r /= rx
    r *= r
    dy = scene.Y - cy
    dy /= ry
    dy *= dy
    r += dy
    return np.sqrt(r, out=r)


def _box_in_lung(scene: Scene, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A box centre (B, 1, 1) moved, where needed, inside this patient's lung on the box's side."""
    geo = scene.geo
    u = col(box[:, 0] - 0.5)
    au = np.clip(np.abs(u), geo["mediastinum"] + 0.05, 0.8 * geo["thorax"])
    cy = np.clip(col(box[:, 1]), geo["lung_top"] + 0.08, geo["lung_base"] - 0.09)
    return 0.5 + np.where(u < 0, -au, au), cy


def _side(scene: Scene, sign: np.ndarray) -> np.ndarray:
    """1 on the image half whose sign(U) is `sign` (B, 1, 1), softly."""
    return sigmoid(sign * scene.U / 0.01)


def _atelectasis(scene: Scene, s: np.ndarray, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Plate-like linear opacity, near-horizontal, in the lower zones."""
    box = _pick_boxes(scene.draws, "Atelectasis", boxes)
    d = scene.draws
    box[:, 1] = np.clip(box[:, 1], 0.45, 0.75)
    cx, cy = _box_in_lung(scene, box)
    length = col(np.clip(box[:, 2], 0.08, 0.26))
    thick = col(d.uniform("atel.thick", 0.012, 0.022))
    angle = col(d.uniform("atel.angle", -0.35, 0.35))
    dx, dy = scene.dx(cx), scene.Y - cy
    along = np.cos(angle) * dx + np.sin(angle) * dy
    across = -np.sin(angle) * dx + np.cos(angle) * dy
    plate = exp_(-((across / thick) ** 2)) * sigmoid((length / 2 - np.abs(along)) / 0.01)
    haze = exp_(-(dx**2 + dy**2) / (2 * (length / 2) ** 2))
    add = s * (0.5 * plate + 0.1 * haze) * (0.3 + 0.7 * scene.lung)
    return add, None


def _effusion(scene: Scene, s: np.ndarray, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Fluid filling the lung base up to a meniscus, blunting the costophrenic angle."""
    box = _pick_boxes(scene.draws, "Effusion", boxes)
    d = scene.draws
    sign = col(np.where(box[:, 0] < 0.5, -1.0, 1.0))
    both = col(d.chance("eff.bilateral", 0.25))
    height = col(np.clip(0.45 * box[:, 3] + 0.06, 0.08, 0.28))
    aU = np.abs(scene.U)
    level = scene.geo["lung_base"] - height * (0.5 + 0.5 * np.clip(aU / scene.geo["thorax"], 0, 1))
    fluid = sigmoid((scene.Y - level) / 0.015)
    sides = np.maximum(_side(scene, sign), both)
    add = s * 0.6 * scene.geo["air"] * scene.lung * fluid * sides
    return add, 1 - 0.8 * fluid * sides


def _patchy(
    scene: Scene,
    s: np.ndarray,
    centre: tuple[np.ndarray, np.ndarray],
    radii: tuple[np.ndarray, np.ndarray],
    density: float,
    fill: float,
    edge: float,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Airspace opacity: a soft region × patchy texture; `fill` shifts it from patchy to solid."""
    r = _ellipse(scene, *centre, *radii)
    region = sigmoid((1 - r) / edge)
    texture = 0.25 + 0.75 * sigmoid((scene.field("patch") + fill) / 0.5)
    add = s * density * scene.geo["air"] * scene.lung * region * texture
    return add, None


def _infiltration(scene: Scene, s: np.ndarray, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Faint, patchy, ill-defined opacity over a larger area."""
    box = _pick_boxes(scene.draws, "Infiltration", boxes)
    radii = (col(np.clip(0.5 * box[:, 2], 0.06, 0.16)), col(np.clip(0.5 * box[:, 3], 0.06, 0.18)))
    return _patchy(scene, s, airspace_centre(scene), radii, density=0.55, fill=-0.3, edge=0.3)


def _pneumonia(scene: Scene, s: np.ndarray, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Patchy opacity, a little denser and more confluent than infiltration."""
    box = _pick_boxes(scene.draws, "Pneumonia", boxes)
    radii = (col(np.clip(0.45 * box[:, 2], 0.06, 0.14)), col(np.clip(0.45 * box[:, 3], 0.06, 0.16)))
    return _patchy(scene, s, airspace_centre(scene), radii, density=0.6, fill=0.1, edge=0.25)


def _consolidation(scene: Scene, s: np.ndarray, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Dense, nearly homogeneous lobar opacity with a sharper edge, at the airspace findings' place."""
    d = scene.draws
    radii = (col(d.uniform("cons.rx", 0.07, 0.11)), col(d.uniform("cons.ry", 0.06, 0.1)))
    return _patchy(scene, s, airspace_centre(scene), radii, density=0.65, fill=0.7, edge=0.15)


def _blob(scene: Scene, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, sharp: float) -> np.ndarray:
    dist = scene.dx(cx)
    dist *= dist
    dy = scene.Y - cy
    dy *= dy
    dist += dy
    np.sqrt(dist, out=dist)
    return step(dist, radius, -sharp * radius, out=dist)  # σ((radius − dist) / (sharp radius))


def _mass(scene: Scene, s: np.ndarray, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Large round opacity (> 3 cm)."""
    box = _pick_boxes(scene.draws, "Mass", boxes)
    radius = col(np.clip(0.22 * (box[:, 2] + box[:, 3]), 0.035, 0.09))
    add = s * 0.4 * _blob(scene, *_box_in_lung(scene, box), radius, 0.12) * (0.4 + 0.6 * scene.lung)
    return add, None


def _nodule(scene: Scene, s: np.ndarray, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Small round bright spot."""
    box = _pick_boxes(scene.draws, "Nodule", boxes)
    radius = col(np.clip(0.2 * (box[:, 2] + box[:, 3]), 0.012, 0.026))
    add = s * 0.45 * _blob(scene, *_box_in_lung(scene, box), radius, 0.25) * (0.4 + 0.6 * scene.lung)
    return add, None


def _pneumothorax(scene: Scene, s: np.ndarray, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Dark, marking-free rim at the apex/lateral edge, bounded by a thin pleural line."""
    box = _pick_boxes(scene.draws, "Pneumothorax", boxes)
    sign = col(finding_side(scene.draws, "Pneumothorax", boxes))
    depth = col(np.clip(0.2 * box[:, 2], 0.025, 0.07))
    lowest = col(np.clip(box[:, 1] + box[:, 3] / 2, 0.35, 0.8))
    extent = _side(scene, sign) * sigmoid((lowest - scene.Y) / 0.03) * scene.lung
    gap = sigmoid((depth - scene.rim) / 0.005) * extent
    line = exp_(-(((scene.rim - depth) / 0.005) ** 2)) * extent
    add = s * (-0.12 * gap + 0.1 * line)
    return add, 1 - np.clip(s * 1.2, 0.0, 1.0) * gap


def _edema(scene: Scene, s: np.ndarray, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Bilateral perihilar ("bat wing") haze."""
    aU = np.abs(scene.U)
    wing = exp_(-(((aU - 0.11) / 0.11) ** 2 + ((scene.Y - 0.48) / 0.14) ** 2))
    texture = 0.75 + 0.25 * np.tanh(scene.field("patch"))
    add = s * 0.55 * scene.geo["air"] * scene.lung * wing * texture
    return add, None


def _fibrosis(scene: Scene, s: np.ndarray, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Reticular net of fine lines (zero crossings of a noise field), upper zones."""
    net = exp_(-((scene.field("fine") / 0.35) ** 2))
    upper = sigmoid((0.52 - scene.Y) / 0.06)
    add = s * 0.3 * net * upper * scene.lung
    return add, None


def _pleural_thickening(scene: Scene, s: np.ndarray, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Bright band along the lung's lateral or apical border."""
    d = scene.draws
    sign = col(np.where(d.chance("pt.side", 0.5), -1.0, 1.0))
    both = col(d.chance("pt.bilateral", 0.3))
    thick = col(d.uniform("pt.thick", 0.012, 0.026))
    apical = col(d.chance("pt.apical", 0.5))
    site = apical * sigmoid((0.32 - scene.Y) / 0.03) + (1 - apical) * exp_(
        -(((scene.Y - col(d.uniform("pt.y", 0.4, 0.65))) / 0.13) ** 2)
    )
    band = sigmoid((thick - scene.rim) / 0.004) * scene.lung
    add = s * 0.45 * band * site * np.maximum(_side(scene, sign), both)
    return add, None


def _hernia(scene: Scene, s: np.ndarray, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Round retrocardiac gas-filled sac (a hiatal hernia) at the heart base, with an air-fluid level:
    a lucency behind the dense heart, which is what makes it conspicuous on a radiograph."""
    d = scene.draws
    cx = col(0.52 + d.normal("hernia.x", 0.015))
    cy = scene.geo["heart_y"] + col(0.06 + d.normal("hernia.y", 0.012))
    radius = col(d.uniform("hernia.r", 0.065, 0.09))
    blob = _blob(scene, cx, cy, radius, 0.1)
    air = _blob(scene, cx, cy, 0.85 * radius, 0.1) * sigmoid((cy + 0.25 * radius - scene.Y) / 0.004)
    add = s * (0.1 * blob - 0.45 * air)
    return add, None


LESIONS: Mapping[str, Paint] = MappingProxyType(
    {
        "Atelectasis": _atelectasis,
        "Effusion": _effusion,
        "Infiltration": _infiltration,
        "Mass": _mass,
        "Nodule": _nodule,
        "Pneumonia": _pneumonia,
        "Pneumothorax": _pneumothorax,
        "Consolidation": _consolidation,
        "Edema": _edema,
        "Fibrosis": _fibrosis,
        "Pleural_Thickening": _pleural_thickening,
        "Hernia": _hernia,
    }
)
"""Findings drawn as a signature on top of the anatomy (Cardiomegaly and Emphysema reshape it)."""
