"""The healthy chest: per-image anatomy (a patient's build, positioning, inspiration) and the
attenuation image it gives (body, lungs, heart, mediastinum, spine, ribs, clavicles, diaphragm,
hila, vessel markings)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtlbench.datasets.cxr14_synth.ops import col, exp_, step
from mtlbench.datasets.cxr14_synth.rng import Draws
from mtlbench.datasets.cxr14_synth.scene import Scene

_EDGE = 0.009  # soft edge width of anatomical outlines, in image widths


def sample_anatomy(rows: pd.DataFrame, patient: Draws, image: Draws) -> dict[str, np.ndarray]:
    """Per-image anatomy: patient-constant build plus per-exposure positioning and inspiration."""
    sex_column = "Patient Gender" if "Patient Gender" in rows.columns else "Patient Sex"
    female = (rows[sex_column].astype(str).str.upper().str[:1] == "F").to_numpy()
    age = np.clip(rows["Patient Age"].to_numpy(dtype=np.float64), 0, 100)
    ap = (rows["View Position"].astype(str) == "AP").to_numpy()
    build = np.where(female, 0.95, 1.0) * (1 + patient.normal("thorax", 0.045))
    inspiration = image.normal("inspiration", 0.015) - 0.035 * ap
    magnify = 1 + 0.11 * ap  # AP: heart farther from the detector looks larger
    heart = 1 + patient.normal("heart", 0.065)
    geo = {
        "thorax": 0.345 * build,
        "lung_top": 0.125 + patient.normal("lung_top", 0.012),
        "lung_base": 0.80 + patient.normal("lung_base", 0.018) + inspiration,
        "dome": 0.075 + patient.normal("dome", 0.012),
        "mediastinum": 0.048 + patient.normal("mediastinum", 0.005),
        "heart_x": 0.545 + patient.normal("heart_x", 0.010),
        "heart_y": 0.64 + patient.normal("heart_y", 0.014) + 0.4 * inspiration,
        "heart_a": 0.145 * heart * magnify * build,
        "heart_b": 0.112 * heart * (1 + 0.5 * (magnify - 1)),
        "heart_tilt": 0.45 + patient.normal("heart_tilt", 0.08),
        "air": 0.44 + patient.normal("air", 0.03),
        "rib_period": 0.071 * (1 + patient.normal("rib_period", 0.04)),
        "rib_phase": patient.uniform("rib_phase"),
        "rib_contrast": 0.09 * (1.15 - 0.35 * age / 100) * (1 + patient.normal("rib_contrast", 0.1)),
        "markings": 1 + patient.normal("markings", 0.15),
        "breast": female * patient.uniform("breast", 0.4, 1.0),
        "rotate": image.normal("rotate", 0.025) + patient.normal("rotate", 0.015),
        "shift_x": image.normal("shift_x", 0.012),
        "shift_y": image.normal("shift_y", 0.015) + 0.02 * ap,
        "zoom": 1 + image.normal("zoom", 0.03) - 0.03 * ap,
        "ap": ap.astype(np.float64),
    }
    return {k: col(v) for k, v in geo.items()}


def draw_anatomy(
    geo: dict[str, np.ndarray], fields: dict[str, np.ndarray], draws: Draws, size: int
) -> tuple[Scene, np.ndarray, np.ndarray]:
    """The healthy chest as attenuation (bright = dense): returns scene, base layer, vessel markings."""
    U, Y = _patient_grid(geo, size)
    aU = np.abs(U)
    edges = _lung_edges(aU, U, Y, geo)
    rim = np.minimum(edges["lateral"], edges["apex"])
    air = _aerated_lung(U, Y, geo, edges, rim)
    base = _tissue(aU, U, Y, geo, air, edges["lateral"])
    across = aU - 0.1
    across *= across  # shared by the hila and the spread of vessel markings
    base += _hila(Y, across, air)
    scene = Scene(U=U, Y=Y, geo=geo, lung=air, rim=rim, fields=fields, draws=draws, size=size)
    return scene, base, _markings(scene, across)


def _aerated_lung(
    U: np.ndarray, Y: np.ndarray, geo: dict[str, np.ndarray], edges: dict[str, np.ndarray], rim: np.ndarray
) -> np.ndarray:
    """The soft lung mask less heart and aorta: lung × (1 − max(heart, aorta))."""
    inner = np.minimum(rim, edges["dome"])
    np.minimum(inner, edges["medial"], out=inner)
    lung = step(inner, 0.0, _EDGE, out=inner)
    heart = _heart(U, Y, geo)
    aorta = _radius(U, Y, 0.055, 0.29)
    step(aorta, 0.032, -_EDGE, out=aorta)
    air = np.maximum(heart, aorta, out=heart)
    np.subtract(1, air, out=air)
    air *= lung
    return air


def _tissue(
    aU: np.ndarray, U: np.ndarray, Y: np.ndarray, geo: dict[str, np.ndarray], air: np.ndarray, lateral: np.ndarray
) -> np.ndarray:
    """Body less the air in the lungs, plus bones and breasts within the body."""
    body = _body(aU, U, Y, geo)
    # 0.56 body − air_g × air × (0.85 + 0.15 σ((0.55 − Y) / 0.1))
    upper = step(Y, 0.55, -0.1)
    upper *= 0.15 * geo["air"]
    upper += 0.85 * geo["air"]
    upper *= air
    base = np.multiply(body, 0.56, dtype=np.float32)
    base -= upper
    bones = _bones(aU, U, Y, geo, lateral)
    bones *= body
    base += bones
    female = np.flatnonzero(geo["breast"].ravel() > 0)  # breast is exactly 0 otherwise
    if female.size:
        breast = _breast(aU[female], Y[female])
        breast *= 0.1 * geo["breast"][female]
        breast *= body[female]
        base[female] += breast
    return base


def _hila(Y: np.ndarray, across: np.ndarray, air: np.ndarray) -> np.ndarray:
    """The hilar shadows, within the aerated lung."""
    hila = _gauss(Y, 0.45, across, 0.035)
    hila *= 0.12
    hila *= air
    return hila


def _markings(scene: Scene, across: np.ndarray) -> np.ndarray:
    """Vessel markings: markings_g × air × (0.02 + 0.09 vessels × spread from the hila)."""
    markings = scene.field("markings")  # exp(−(field / 0.45)²) × spread, scaled
    markings *= markings
    markings *= -1 / 0.45**2
    exp_(markings)
    markings *= _gauss(scene.Y, 0.47, across, 0.14)
    markings *= 0.09 * scene.geo["markings"]
    markings += 0.02 * scene.geo["markings"]
    markings *= scene.lung
    return markings


def _radius(U: np.ndarray, Y: np.ndarray, u0: float, y0: float) -> np.ndarray:
    """Distance from the point (U, Y) = (u0, y0)."""
    r = U - u0
    r *= r
    dy = Y - y0
    dy *= dy
    r += dy
    return np.sqrt(r, out=r)


def _gauss(Y: np.ndarray, y0: float, across: np.ndarray, sd: float) -> np.ndarray:
    """exp(−(across + (Y − y0)²) / (2 sd²)), with `across` a squared horizontal distance."""
    g = Y - y0
    g *= g
    g += across
    g *= -1 / (2 * sd**2)
    return exp_(g)


def _patient_grid(geo: dict[str, np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image grid mapped into the patient's frame (rotation, shift and zoom per image): U = X − 0.5, Y."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    x, y = t[None, None, :], t[None, :, None]
    cos, sin = np.cos(geo["rotate"]) / geo["zoom"], np.sin(geo["rotate"]) / geo["zoom"]
    U = (cos * x - geo["shift_x"]) - sin * y
    Y = (sin * x + (0.5 - geo["shift_y"])) + cos * y
    return U, Y


def _lung_edges(aU: np.ndarray, U: np.ndarray, Y: np.ndarray, geo: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Signed distances (positive inside) from each lung border: lateral, apex, dome, medial."""
    right = U < 0  # image left is the patient's right, whose hemidiaphragm sits higher
    top = geo["lung_top"]
    base = np.multiply(right, np.float32(-0.018))  # lung_base − 0.018 right (bool × float32 stays float32)
    base += geo["lung_base"]
    below_top = Y - top
    v = np.subtract(base, top)
    np.divide(below_top, v, out=v)
    np.clip(v, 0, 1, out=v)
    lateral = np.sqrt(v)  # thorax × (0.5 + 0.5 √v) − |U|
    lateral += 1
    lateral *= 0.5 * geo["thorax"]
    lateral -= aU
    apex = aU - 0.16  # Y − (top + 2.8 (|U| − 0.16)²)
    apex *= apex
    apex *= 2.8
    np.subtract(below_top, apex, out=apex)
    arch = aU - 0.17  # clip(1 − ((|U| − 0.17) / 0.2)², 0, 1)
    arch *= 5
    arch *= arch
    np.subtract(1, arch, out=arch)
    np.clip(arch, 0, 1, out=arch)
    height = np.multiply(right, np.float32(0.012))  # dome + 0.012 right
    height += geo["dome"]
    arch *= height
    dome = np.subtract(base, Y, out=base)
    dome -= arch
    medial = np.multiply(v, 0.02, out=below_top)  # |U| − (mediastinum + 0.02 v)
    medial += geo["mediastinum"]
    np.subtract(aU, medial, out=medial)
    return {"lateral": lateral, "apex": apex, "dome": dome, "medial": medial}


def _heart(U: np.ndarray, Y: np.ndarray, geo: dict[str, np.ndarray]) -> np.ndarray:
    dx, dy = U - (geo["heart_x"] - 0.5), Y - geo["heart_y"]
    cos, sin = np.cos(geo["heart_tilt"]), np.sin(geo["heart_tilt"])
    a, b = geo["heart_a"], geo["heart_b"]
    p = dx * (cos / a)  # p / a with p = cos dx + sin dy
    tmp = np.multiply(dy, sin / a)
    p += tmp
    q = np.multiply(dx, -sin / b, out=dx)  # q / b with q = −sin dx + cos dy
    q += np.multiply(dy, cos / b, out=tmp)
    p *= p
    q *= q
    p += q
    r = np.sqrt(p, out=p)
    return step(r, 1.0, -_EDGE / b, out=r)  # σ((1 − r) b / EDGE)


def _body(aU: np.ndarray, U: np.ndarray, Y: np.ndarray, geo: dict[str, np.ndarray]) -> np.ndarray:
    """Soft tissue thickness: torso with shoulders, narrowing to the neck at the top."""
    half = step(Y, 0.2, -0.03)  # thorax + 0.09 + 0.05 σ((0.2 − Y) / 0.03) − 0.3 σ((0.04 − Y) / 0.02)
    half *= 0.05
    neck = step(Y, 0.04, -0.02)
    neck *= 0.3
    half -= neck
    half += geo["thorax"] + 0.09
    inside = step(np.subtract(half, aU, out=neck), 0.0, 0.012, out=neck)
    tissue = np.divide(U, half, out=half)  # 0.6 + 0.4 √clip(1 − (U / half)², 0, 1)
    tissue *= tissue
    np.subtract(1, tissue, out=tissue)
    np.clip(tissue, 0, 1, out=tissue)
    np.sqrt(tissue, out=tissue)
    tissue *= 0.4
    tissue += 0.6
    tissue *= inside
    return tissue


def _bones(aU: np.ndarray, U: np.ndarray, Y: np.ndarray, geo: dict[str, np.ndarray], lateral: np.ndarray) -> np.ndarray:
    """Spine, trachea (negative), ribs and clavicles, as added attenuation."""
    bones, scratch = _spine(U, Y)
    ribs = _ribs(aU, Y, geo, lateral, scratch)
    bones += ribs
    bones += _clavicles(aU, Y, scratch, out=ribs)
    return bones


def _spine(U: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The spine less the air of the trachea, and a spare (B, H, W) array for scratch work."""
    u2 = U * U
    spine = np.multiply(u2, -1 / 0.028**2)  # spine: 0.16 exp(−(U / 0.028)²) (0.85 + 0.15 cos(2π Y / 0.05))
    exp_(spine)
    wave = np.multiply(Y, 2 * np.pi / 0.05, dtype=np.float32)
    np.cos(wave, out=wave)
    wave *= 0.16 * 0.15
    wave += 0.16 * 0.85
    spine *= wave
    trachea = np.multiply(u2, -1 / 0.012**2, out=u2)  # −0.12 exp(−(U / 0.012)²) σ((0.36 − Y) / 0.02)
    exp_(trachea)
    trachea *= step(Y, 0.36, -0.02, out=wave)
    trachea *= 0.12
    spine -= trachea
    return spine, trachea


def _ribs(
    aU: np.ndarray, Y: np.ndarray, geo: dict[str, np.ndarray], lateral: np.ndarray, tmp: np.ndarray
) -> np.ndarray:
    """Posterior and anterior ribs within the rib cage; `tmp` is scratch space."""
    cage = step(lateral, -0.03, 0.008)
    cage *= step(aU, 0.035, 0.01, out=tmp)
    cage *= step(Y, geo["lung_base"] + 0.02, -0.02, out=tmp)
    cage *= step(Y, geo["lung_top"] - 0.04, 0.02, out=tmp)
    # Posterior ribs run down and out from the spine; fainter anterior ribs run down and in.
    # (0.5 + 0.5 cos θ)² = (1 + cos θ)² / 4: the 1/4 goes into the rib contrast.
    bend = aU - 0.17  # posterior = Y − 0.22 |U| − 2.5 max(|U| − 0.17, 0)²
    np.maximum(bend, 0, out=bend)
    bend *= bend
    bend *= 2.5
    ribs = np.multiply(aU, -0.22, dtype=np.float32)
    ribs += Y
    ribs -= bend
    phase, period = 2 * np.pi * geo["rib_phase"], geo["rib_period"]
    ribs *= 2 * np.pi / period  # 2π (posterior / period − phase)
    ribs -= phase
    np.cos(ribs, out=ribs)
    ribs += 1
    ribs *= ribs
    anterior = np.multiply(aU, 0.45, out=bend)  # anterior = Y + 0.45 |U|
    anterior += Y
    anterior *= 2 * np.pi / (1.2 * period)  # 2π (anterior / (1.2 period) + phase)
    anterior += phase
    np.cos(anterior, out=anterior)
    anterior += 1
    anterior *= anterior
    anterior *= step(aU, 0.1, 0.02, out=tmp)
    anterior *= 0.4
    ribs += anterior
    ribs *= cage
    ribs *= 0.25 * geo["rib_contrast"]
    return ribs


def _clavicles(aU: np.ndarray, Y: np.ndarray, tmp: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Both clavicles, drawn into `out`; `tmp` is scratch space."""
    s = np.subtract(aU, 0.03, out=out)  # along each clavicle, medial → lateral: clip((|U| − 0.03) / 0.27, 0, 1)
    s *= 1 / 0.27
    np.clip(s, 0, 1, out=s)
    clavicle = s  # exp(−((Y − (0.2 − 0.07 s)) / 0.011)²) σ((0.31 − |U|) / 0.01) σ((|U| − 0.03) / 0.01)
    clavicle *= 0.07
    clavicle += Y
    clavicle -= 0.2
    clavicle *= clavicle
    clavicle *= -1 / 0.011**2
    exp_(clavicle)
    clavicle *= step(aU, 0.31, -0.01, out=tmp)
    clavicle *= step(aU, 0.03, 0.01, out=tmp)
    clavicle *= 0.2
    return clavicle


def _breast(aU: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """exp(−((|U| − 0.22) / 0.14)²) σ((Y − 0.5) / 0.05) σ((lower edge − Y) / 0.012)."""
    square = aU - 0.22
    square *= square
    lower_edge = np.multiply(square, -0.8)  # 0.8 − 0.8 (|U| − 0.22)²
    lower_edge += 0.8
    breast = np.multiply(square, -1 / 0.14**2, out=square)
    exp_(breast)
    breast *= step(Y, 0.5, 0.05)
    np.subtract(lower_edge, Y, out=lower_edge)
    breast *= step(lower_edge, 0.0, 0.012, out=lower_edge)
    return breast
