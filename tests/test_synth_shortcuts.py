"""`--synth-shortcuts`: a linear probe on the pixels finds NIH's pneumothorax label and sick AP
patients through the shortcut marks when they are drawn, and not when they are not. No finding is
drawn in these images, so the marks are the only way to the labels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.metrics import roc_auc_score

from mtlbench.config import build_config
from mtlbench.datasets.base import DataRequest
from mtlbench.datasets.cxr14_synth import loader, params, render, shortcuts
from mtlbench.datasets.cxr14_synth.agreement import nih_label_matrix
from mtlbench.datasets.nih_tables import read_nih_table
from mtlbench.errors import UserError
from mtlbench.tasks import TASK_NAMES

SIZE, PER_CLASS = 32, 200


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    """PER_CLASS images NIH labels Pneumothorax and PER_CLASS it does not, in table order."""
    table = read_nih_table()
    ptx = table["Finding Labels"].str.contains("Pneumothorax")
    rng = np.random.default_rng(0)
    picked = np.concatenate(
        [
            rng.choice(np.flatnonzero(ptx), PER_CLASS, replace=False),
            rng.choice(np.flatnonzero(~ptx), PER_CLASS, replace=False),
        ]
    )
    return table.iloc[np.sort(picked)].reset_index(drop=True)


def probe_auroc(images: np.ndarray, target: np.ndarray) -> float:
    """Cross-validated AUROC of a logistic regression on standardised pixels."""
    x = images.reshape(len(images), -1).astype(np.float64)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    probe = LogisticRegression(C=0.05, max_iter=2000)
    scores = cross_val_predict(probe, x, target, cv=5, method="decision_function")
    return float(roc_auc_score(target, scores))


@pytest.fixture(scope="module")
def images(rows) -> dict[bool, np.ndarray]:
    nothing = np.zeros((len(rows), len(TASK_NAMES)), dtype=bool)  # no finding drawn: only marks can tell
    return {on: render.render_images(rows, nothing, SIZE, 0, shortcuts=on) for on in (False, True)}


def test_a_probe_finds_the_chest_drain_only_when_shortcuts_are_on(rows, images) -> None:
    pneumothorax = nih_label_matrix(rows["Finding Labels"])["Pneumothorax"].to_numpy()
    on, off = probe_auroc(images[True], pneumothorax), probe_auroc(images[False], pneumothorax)
    # A perfect drain reader scores (1 + DRAIN_RATE − DRAIN_BACKGROUND) / 2 = 0.84: most labelled
    # images have a drain, few others do. The probe reads thin lines at 32 px imperfectly (0.74 here).
    assert (1 + shortcuts.DRAIN_RATE - shortcuts.DRAIN_BACKGROUND) / 2 == pytest.approx(0.84)
    assert on > 0.68 and off < 0.6, (on, off)


def test_a_probe_finds_sick_ap_patients_by_the_portable_mark_only_when_shortcuts_are_on(rows, images) -> None:
    ap = (rows["View Position"] == "AP").to_numpy()
    sick = nih_label_matrix(rows["Finding Labels"]).sum(axis=1).to_numpy()[ap] >= 2
    on, off = probe_auroc(images[True][ap], sick), probe_auroc(images[False][ap], sick)
    # The mark is on 0.1 + 0.25 × findings of AP images (at most 0.9): even a perfect reader tells
    # ≥ 2 findings from fewer only so well.
    assert on > 0.6 and off < 0.6, (on, off)


def test_shortcuts_are_another_dataset(tmp_path) -> None:
    plain = DataRequest(data_dir=tmp_path, image_size=SIZE)
    marked = dataclasses.replace(plain, synth_shortcuts=True)
    assert loader.dataset_root(marked) != loader.dataset_root(plain)
    assert params.generator_params(100, 50, SIZE, 0, True) != params.generator_params(100, 50, SIZE, 0)
    base = build_config("smoke")
    assert dataclasses.replace(base, synth_shortcuts=True).config_hash() != base.config_hash()
    assert "synth_shortcuts" not in base.hashed_fields()  # off: earlier runs keep their identity
    with pytest.raises(UserError, match="cxr14-synth only"):
        build_config("smoke", [({"synth_shortcuts": True, "dataset": "nih-cxr14"}, "command line")])
