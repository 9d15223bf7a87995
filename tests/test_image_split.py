"""`--split random-image`: the same test images (half of the patient-wise test split), train and val drawn by
image from everything else at the patient-wise sizes, and the leaked fraction counted exactly."""

from dataclasses import replace

import numpy as np
import pytest

from mtlbench.config import build_config
from mtlbench.datasets.base import DatasetBundle, Split
from mtlbench.datasets.split_checks import CONSEQUENCE, label_warnings
from mtlbench.errors import UserError
from mtlbench.image_split import leaked_fraction, random_image_split
from mtlbench.plan import protocol_warnings


def bundle(shared: bool = True) -> DatasetBundle:
    """60 train / 20 val / 40 test images; test patients 100–119 have two images each, one of them in a
    patient-wise split's test only; train/val patients 0–79 one each."""
    pixels = np.arange(120 * 4, dtype=np.uint8).reshape(120, 2, 2) % 251
    patients = np.r_[np.arange(80), np.repeat(np.arange(100, 120), 2)]
    labels = (np.random.default_rng(0).random((120, 14)) < 0.3).astype(np.uint8)
    ids = np.array([f"img{i:03d}" for i in range(120)])

    def split(rows: np.ndarray) -> Split:
        store = pixels if shared else pixels.copy()
        return Split(store, rows, labels[rows], ids[rows], patients[rows])

    return DatasetBundle(
        "toy", split(np.arange(60)), split(np.arange(60, 80)), split(np.arange(80, 120)), {"warnings": []}
    )


def test_test_images_are_half_the_patient_wise_test_and_sizes_are_kept():
    b = bundle()
    leaky = random_image_split(b, data_seed=0)
    assert (len(leaky.train), len(leaky.val), len(leaky.test)) == (60, 20, 20)
    assert set(leaky.test.image_ids) <= set(b.test.image_ids)
    everything = np.concatenate([s.image_ids for s in leaky.splits().values()])
    assert len(set(everything)) == len(everything)  # no image in two splits
    original = np.concatenate([s.labels for s in b.splits().values()])
    for s in leaky.splits().values():  # each image keeps its own pixels, labels and patient
        index = np.array([int(i[3:]) for i in s.image_ids])
        assert np.array_equal(s.pixels[s.rows], b.train.pixels[index])
        assert np.array_equal(s.labels, original[index])
        assert np.array_equal(s.patient_ids, np.r_[np.arange(80), np.repeat(np.arange(100, 120), 2)][index])


def test_the_split_is_seeded():
    a, b = random_image_split(bundle(), 0), random_image_split(bundle(), 0)
    assert all(np.array_equal(x.image_ids, y.image_ids) for x, y in zip(a.splits().values(), b.splits().values()))
    other = random_image_split(bundle(), 1)
    assert not np.array_equal(a.test.image_ids, other.test.image_ids)


def test_the_leaked_fraction_is_the_share_of_test_images_whose_patient_trains():
    leaky = random_image_split(bundle(), 0)
    info = leaky.info["image_split"]
    trained = set(leaky.train.patient_ids)
    expected = np.mean([p in trained for p in leaky.test.patient_ids])
    assert info["leaked_test_fraction"] == pytest.approx(expected)
    assert 0 < info["leaked_test_fraction"] < 1  # some test patients' other image was drawn into training
    assert (info["test_images"], info["patient_split_test_images"], info["pool_images"]) == (20, 40, 100)
    assert leaked_fraction(np.array([1, 2]), np.array([1, 1, 3, 4])) == 0.5
    assert leaked_fraction(np.array([1]), np.array([])) == 0.0


def test_label_warnings_are_said_of_the_new_splits():
    b = bundle()
    no_hernia = replace(b.test, labels=np.where(np.arange(14) == 13, 0, b.test.labels).astype(np.uint8))
    b = replace(b, test=no_hernia)
    stale = label_warnings("toy", b.splits())
    assert stale == ["toy: the test split (40 images) has no positive Hernia; " + CONSEQUENCE["test"]]
    leaky = random_image_split(replace(b, info={"warnings": [*stale, "a scan warning"]}), 0)
    assert leaky.info["warnings"] == ["a scan warning", *label_warnings("toy", leaky.splits())]
    assert "(20 images) has no positive Hernia" in leaky.info["warnings"][-1]


def test_splits_that_share_no_image_store_are_refused():
    with pytest.raises(UserError, match="--split random-image: toy's splits are not rows of one image store"):
        random_image_split(bundle(shared=False), 0)


def test_the_sweep_warns_that_the_split_leaks():
    config = replace(build_config("smoke"), split="random-image")
    assert any("LEAKY by design" in w for w in protocol_warnings(config, ["ew"], {}))
    assert not any("LEAKY" in w for w in protocol_warnings(build_config("smoke"), ["ew"], {}))


def test_split_is_hashed_only_when_random_image():
    base = build_config("smoke")
    assert "split" not in base.hashed_fields()  # earlier runs keep their identity
    assert replace(base, split="random-image").config_hash() != base.config_hash()


def test_the_authors_other_deviations_are_named_before_the_sweep():
    lines = protocol_warnings(build_config("authors"), ["ew"], {})
    assert any(line.startswith("--augment-eval scores validation and test images") for line in lines)
    assert any(line.startswith("--select last: no model selection") for line in lines)
