"""cxr14-synth's shared latent severity: findings of one cause are drawn together, at one severity,
and couple in the image (congestion and heart size with the cardiac findings, one place for the
airspace findings)."""

from __future__ import annotations

import numpy as np
import pytest

from mtlbench.datasets.cxr14_synth import latent, nih_sample, render
from mtlbench.datasets.cxr14_synth.anatomy import sample_anatomy
from mtlbench.datasets.cxr14_synth.findings import apply_shape_findings
from mtlbench.datasets.cxr14_synth.params import FINDING_STRENGTH
from mtlbench.datasets.cxr14_synth.rng import Draws, image_keys
from mtlbench.datasets.nih_layout import parse_finding_labels
from mtlbench.tasks import TASK_NAMES

SIZE = 64


@pytest.fixture(scope="module")
def healthy_rows():
    rows = nih_sample.sample_nih_rows(400, 0)
    return rows.iloc[np.flatnonzero(parse_finding_labels(rows["Finding Labels"], "t").sum(axis=1) == 0)[:16]]


def drawn(rows, *tasks: str) -> np.ndarray:
    out = np.zeros((len(rows), len(TASK_NAMES)), dtype=bool)
    for task in tasks:
        out[:, TASK_NAMES.index(task)] = True
    return out


def test_a_groups_drawn_findings_share_one_severity_per_image() -> None:
    draws = Draws(0, image_keys([f"{i:08d}_000.png" for i in range(500)]))
    severity = latent.group_severity(draws)
    rendered = np.ones((500, len(TASK_NAMES)), dtype=bool)
    amounts = latent.signature_amounts(rendered, severity)
    for group, findings in latent.LATENT_GROUPS.items():
        columns = amounts[:, [TASK_NAMES.index(t) for t in findings]]
        assert np.allclose(columns, columns[:, :1]) and columns.std() > 0.1, group
        low, high = latent.SEVERITY_RANGE
        assert low <= columns.min() and columns.max() <= high
    others = [t for t in range(len(TASK_NAMES)) if TASK_NAMES[t] not in sum(latent.LATENT_GROUPS.values(), ())]
    assert (amounts[:, others] == 1).all()
    assert not latent.signature_amounts(~rendered, severity).any()


def test_a_cardiac_finding_congests_the_vessels_and_enlarges_the_heart(healthy_rows) -> None:
    """Heart failure without cardiomegaly called: effusion or oedema alone enlarges the heart a
    little (less than cardiomegaly does) and raises the vessel markings; a finding of no group does
    neither."""
    draws = Draws(0, image_keys(healthy_rows["Image Index"]))
    patient = Draws(0, healthy_rows["Patient ID"].to_numpy().astype(np.uint64))
    severity = latent.group_severity(draws)
    boxes = nih_sample.read_nih_boxes()

    def anatomy(*tasks: str) -> dict[str, np.ndarray]:
        geo = sample_anatomy(healthy_rows, patient, draws)
        amounts = latent.signature_amounts(drawn(healthy_rows, *tasks), severity)
        apply_shape_findings(geo, amounts, draws, FINDING_STRENGTH, boxes, severity)
        return geo

    none, cardio, mass = anatomy(), anatomy("Cardiomegaly"), anatomy("Mass")
    assert np.array_equal(mass["heart_a"], none["heart_a"]) and np.array_equal(mass["markings"], none["markings"])
    for task in ("Effusion", "Edema"):
        geo = anatomy(task)
        assert (none["heart_a"] < geo["heart_a"]).all() and (geo["heart_a"] < cardio["heart_a"]).all(), task
        assert (geo["markings"] > none["markings"]).all(), task


def test_airspace_findings_of_one_image_sit_at_one_place(healthy_rows) -> None:
    none = render.render_images(healthy_rows, drawn(healthy_rows), SIZE, 0).astype(float)
    where = {}
    for task in latent.LATENT_GROUPS["airspace"]:
        diff = render.render_images(healthy_rows, drawn(healthy_rows, task), SIZE, 0).astype(float) - none
        where[task] = np.clip(diff, 0, None).reshape(len(healthy_rows), -1)
    overlap = [
        np.corrcoef(where["Consolidation"][i], where[other][i])[0, 1]
        for other in ("Pneumonia", "Infiltration")
        for i in range(len(healthy_rows))
    ]
    assert np.median(overlap) > 0.5
