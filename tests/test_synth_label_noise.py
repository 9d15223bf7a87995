"""cxr14-synth's per-finding label noise: its measured constants are what the shipped tables give,
and the rendered copy of NIH's labels has each finding's PPV and sensitivity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mtlbench.datasets.cxr14_synth import agreement, noise
from mtlbench.datasets.nih_layout import parse_finding_labels
from mtlbench.datasets.nih_tables import nih_data_file, read_nih_table
from mtlbench.tasks import TASK_NAMES


@pytest.fixture(scope="module")
def nih_table() -> pd.DataFrame:
    return read_nih_table()


def test_measured_constants_are_what_the_shipped_tables_give(nih_table) -> None:
    measured = agreement.measure_agreement(nih_table, pd.read_csv(nih_data_file(agreement.EXPERT_FILE)))
    covered = {f for group in agreement.EXPERT_GROUPS.values() for f in group}
    assert set(measured.index) == covered
    for task in TASK_NAMES:
        stated = agreement.LABEL_AGREEMENT[task]
        if task in covered:
            row = measured.loc[task]
            assert (stated.ppv, stated.sensitivity) == (round(row["ppv"], 3), round(row["sensitivity"], 3)), task
            assert stated.source.startswith("measured") and row["expert"] in stated.source
        else:
            assert stated == agreement.CHOSEN and stated.source.startswith("choice"), task
    # The figures, read off the expert images: pneumothorax PPV ≈ sensitivity ≈ 0.46,
    # nodule/mass PPV ≈ 0.56 as a group and sensitivity ≈ 0.42.
    assert measured.loc["Pneumothorax", "sensitivity_expert_images"] == pytest.approx(0.458, abs=0.001)
    assert measured.loc["Nodule", "sensitivity_expert_images"] == pytest.approx(0.423, abs=0.001)


def test_rendered_labels_have_each_findings_ppv_and_sensitivity(nih_table) -> None:
    labels = parse_finding_labels(nih_table["Finding Labels"], "t").astype(bool)
    rates = noise.nih_noise_rates(noise.prevalence(labels))
    rendered = noise.render_labels(labels, nih_table["Image Index"], 0, noise.prevalence(labels), rates)
    for t, task in enumerate(TASK_NAMES):
        if labels[:, t].sum() < 1000:  # Hernia (227), Pneumonia, Fibrosis, ...: too few for a tight check
            continue
        stated = agreement.LABEL_AGREEMENT[task]
        ppv = rendered[labels[:, t], t].mean()
        sensitivity = labels[rendered[:, t], t].mean()
        assert ppv == pytest.approx(stated.ppv, abs=0.03), task
        assert sensitivity == pytest.approx(stated.sensitivity, abs=0.03), task


def test_noise_rates_from_ppv_and_sensitivity() -> None:
    prevalence = np.full(len(TASK_NAMES), 0.1)
    perfect = {t: agreement.Agreement(1.0, 1.0, "test") for t in TASK_NAMES}
    drop, spurious = agreement.noise_rates(perfect, prevalence)
    assert not drop.any() and not spurious.any()
    half = {t: agreement.Agreement(0.5, 0.5, "test") for t in TASK_NAMES}
    drop, spurious = agreement.noise_rates(half, prevalence)
    # Of 100 images, 10 labelled, 5 of them drawn: half of those that show it, so 5 of the 90 others.
    assert drop == pytest.approx(0.5) and spurious == pytest.approx(5 / 90)
