"""The report's patient-leak section: random-image runs against the patient-wise runs of the same settings,
on the same test images, paired resample by resample (databases written by tests/results_fixture.py)."""

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mtlbench.report.leak import leak_comparisons, leak_summary, leak_table, leak_task_table
from mtlbench.report.load import load_protocols
from mtlbench.report.render import write_report
from mtlbench.tasks import TASK_NAMES
from tests.results_fixture import ProtocolSpec, build_results

INFO = {"protocol": "random-image", "test_images": 210, "patient_split_test_images": 420, "leaked_test_fraction": 0.8}
OFFICIAL = ProtocolSpec(methods=("ew", "deepchest"), seeds=(0, 1), failures={}, scores={"ew": 0.6, "deepchest": 0.8})
LEAKY = replace(OFFICIAL, config={"split": "random-image"}, split_info=INFO)


def comparisons(tmp_path, *specs, resamples=200):
    build_results(tmp_path / "r.sqlite", *specs)
    return leak_comparisons(load_protocols(tmp_path / "r.sqlite"), resamples, 20)


def test_the_same_predictions_under_both_splits_differ_by_exactly_zero(tmp_path):
    (c,) = comparisons(tmp_path, OFFICIAL, LEAKY)
    assert c.variants() == ["ew", "deepchest"]
    for v in c.variants():
        d = c.mean_difference(v)
        assert (d.mean, d.low, d.high) == (0.0, 0.0, 0.0)
        assert all(t.mean == 0.0 or np.isnan(t.mean) for t in c.task_differences(v))


def test_the_leak_is_the_difference_of_the_two_splits_on_the_same_images(tmp_path):
    official, leaky = build_results(
        tmp_path / "r.sqlite", OFFICIAL, replace(LEAKY, scores={"ew": "perfect", "deepchest": 0.8})
    )
    (c,) = leak_comparisons(load_protocols(tmp_path / "r.sqlite"), 1000, 20)  # Holm over 14 needs p < 1/280
    eligible = np.array([official.test_labels[:, t].sum() >= 20 for t in range(len(TASK_NAMES))])
    fair = np.mean(
        [
            np.mean(
                [
                    roc_auc_score(official.test_labels[:, t], official.test_probs[("ew", s)][:, t])
                    for t in np.flatnonzero(eligible)
                ]
            )
            for s in (0, 1)
        ]
    )
    d = c.mean_difference("ew")
    assert d.mean == pytest.approx(1.0 - fair, abs=1e-9)  # "perfect" scores have AUROC 1 on every task
    assert 0 < d.low <= d.mean <= d.high and d.p < 0.05
    assert c.mean_difference("deepchest").mean == 0.0  # the same scores under both splits
    table = leak_table(c)
    assert list(table["variant"]) == ["ew", "deepchest"] and table.loc[0, "AUROC, random-image split"] == "1.000"
    tasks = leak_task_table(c)
    assert tasks.loc[len(TASK_NAMES) - 1, "task"] == "Hernia †"  # one test positive: shown, not averaged
    assert tasks.loc[0, "ew"].endswith("*")  # Atelectasis: 1 − AUROC of 0.6-separated scores, far from 0


def test_the_summary_states_the_leaked_share_and_the_sizes(tmp_path):
    (c,) = comparisons(tmp_path, OFFICIAL, LEAKY)
    text = leak_summary(c)
    assert "80.0% of them have a patient with images in the random-image training split" in text
    assert "210 test images (of the patient-wise split's 420)" in text


def test_a_random_image_protocol_without_a_patient_wise_twin_has_no_section(tmp_path):
    assert comparisons(tmp_path, replace(OFFICIAL, epochs=4), LEAKY) == []  # another protocol: no twin


def test_no_random_image_protocol_no_section(tmp_path):
    assert comparisons(tmp_path, OFFICIAL) == []


def test_only_shared_seeds_are_compared(tmp_path):
    (c,) = comparisons(tmp_path, OFFICIAL, replace(LEAKY, seeds=(1, 2)))
    assert all(sorted(m.by_seed) == [1] for pair in c.metrics.values() for m in pair)


def test_the_report_has_the_section_and_flags_the_leaky_protocol(tmp_path):
    build_results(tmp_path / "r.sqlite", OFFICIAL, LEAKY)
    write_report(tmp_path / "r.sqlite", tmp_path / "out", resamples=20)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## The patient leak: split by image against split by patient" in md
    assert md.count("LEAKY: split by image") == 1  # the random-image protocol's heading, not the other's
