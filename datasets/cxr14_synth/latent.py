"""A shared latent severity that couples findings with a common cause in the image.

Two groups of NIH findings share a cause:

    cardiac    Cardiomegaly, Effusion, Edema             (heart failure: a big heart, pleural fluid,
                                                          interstitial and alveolar oedema)
    airspace   Consolidation, Pneumonia, Infiltration    (one airspace process that reports name
                                                          differently)

Each image has one severity per group (SEVERITY_RANGE, mean 1), and every drawn finding of the
group is drawn at that severity: an image's effusion and oedema are faint or marked together.
Beyond that, a drawn cardiac finding congests the vessels (vessel markings × 1 + CONGESTION ×
severity) and, without cardiomegaly drawn, still enlarges the heart a little (HEART_TRACE ×
severity of cardiomegaly's own enlargement); and the airspace findings of an image sit at one
place (findings.airspace_centre), so when several are drawn they overlap as one opacity. Findings
outside both groups are drawn at severity 1, as before.

All of it is a pure function of the drawn findings and the image's own random draws, like the
rest of the renderer, and it adds no painting pass (speed: README, "The synthetic dataset").
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

import numpy as np

from mtlbench.datasets.cxr14_synth.rng import Draws
from mtlbench.tasks import TASK_NAMES

LATENT_GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "cardiac": ("Cardiomegaly", "Effusion", "Edema"),
        "airspace": ("Consolidation", "Pneumonia", "Infiltration"),
    }
)
# Spread of a group's severity, uniform, mean 1: a drawn finding ranges from faint (0.6 of its
# strength) to marked (1.4). A choice, not a measurement: wide enough that severity, not only
# presence, varies between images, narrow enough that the faintest signature is still drawn.
SEVERITY_RANGE = (0.6, 1.4)
# Vessel markings gain this × severity when a cardiac finding is drawn (upper-lobe diversion and
# interstitial markings of raised venous pressure); a choice, about a third of the markings' own
# spread between patients (anatomy: markings sd 0.15 ... their contrast).
CONGESTION = 0.35
# Without cardiomegaly drawn, a drawn effusion or oedema enlarges the heart by this × severity of
# cardiomegaly's own enlargement: a heart near the threshold, not called. A choice.
HEART_TRACE = 0.25


def group_severity(draws: Draws) -> dict[str, np.ndarray]:
    """Per group, each image's severity (N,), from its own draws."""
    low, high = SEVERITY_RANGE
    return {group: draws.uniform(f"severity.{group}", low, high) for group in LATENT_GROUPS}


def signature_amounts(rendered: np.ndarray, severity: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N, 14) float32: how strongly each finding is drawn in each image (0 = not drawn): its
    group's severity for a drawn finding of a group, 1 for any other drawn finding."""
    amounts = rendered.astype(np.float32)
    for group, findings in LATENT_GROUPS.items():
        for task in findings:
            t = TASK_NAMES.index(task)
            amounts[:, t] *= severity[group].astype(np.float32)
    return amounts


def cardiac_drive(amounts: np.ndarray, severity: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(congestion, heart trace), each (N,): the markings' gain and, where cardiomegaly is not drawn,
    the fraction of its enlargement the heart gets, from the image's drawn cardiac findings."""
    cardiac = [TASK_NAMES.index(t) for t in LATENT_GROUPS["cardiac"]]
    any_drawn = (amounts[:, cardiac] > 0).any(axis=1)
    level = np.where(any_drawn, severity["cardiac"], 0.0)
    no_cardiomegaly = amounts[:, TASK_NAMES.index("Cardiomegaly")] == 0
    return CONGESTION * level, np.where(no_cardiomegaly, HEART_TRACE * level, 0.0)
