"""chexpert-synth: real CheXpert label rows (uncertain and blank kept), written in CheXpert's layout and
read back by the chexpert reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtlbench.datasets import chexpert_synth
from mtlbench.datasets.base import DataRequest, no_progress
from mtlbench.datasets.chexpert import OBSERVATIONS, TASK_OF
from mtlbench.errors import UserError
from mtlbench.registry import DATASETS
from mtlbench.tasks import TASK_NAMES


def request(data_dir: Path, **kw) -> DataRequest:
    return DataRequest(data_dir=data_dir, image_size=24, synth_images=120, synth_test_images=60, **kw)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, object]:
    data_dir = tmp_path_factory.mktemp("cxs")
    return data_dir, chexpert_synth.load_chexpert_synth(request(data_dir), no_progress)


def test_registered() -> None:
    assert DATASETS.get("chexpert-synth") is chexpert_synth.load_chexpert_synth


def test_rows_are_real_chexpert_rows_with_uncertain_and_blank_kept(generated) -> None:
    data_dir, bundle = generated
    root = chexpert_synth.dataset_root(request(data_dir))
    source = chexpert_synth.read_source_table().assign(key=lambda t: t["Path"].str.split("/", n=2).str[2])
    source = source.set_index("key")
    uncertain = 0
    for name in ("train.csv", "valid.csv", "test.csv"):
        written = pd.read_csv(root / name).assign(key=lambda t: t["Path"].str.split("/", n=2).str[2])
        real = source.loc[written["key"]]
        for column in ("Sex", "Age", "AP/PA", *OBSERVATIONS):
            a, b = written[column].to_numpy(), real[column].to_numpy()
            assert all((pd.isna(x) and pd.isna(y)) or x == y for x, y in zip(a, b)), (name, column)
        assert (written["Frontal/Lateral"] == "Frontal").all()
        uncertain += int((written[list(TASK_OF)] == -1).to_numpy().sum())
        assert written[list(TASK_OF)].isna().to_numpy().any()  # blanks stay blank
    assert uncertain > 0


def test_splits_sizes_patients_and_missing_tasks(generated) -> None:
    _, bundle = generated
    assert len(bundle.train) + len(bundle.val) == 120 and len(bundle.test) == 60
    patients = [set(s.patient_ids) for s in bundle.splits().values()]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    absent = [TASK_NAMES.index(t) for t in TASK_NAMES if t not in TASK_OF.values()]
    for split in bundle.splits().values():
        assert np.isnan(split.labels[:, absent]).all()
    assert bundle.info["generator"]["generator"] == "chexpert-synth" and "test_carved" not in bundle.info


def test_uncertain_policy_changes_only_the_uncertain_labels(generated) -> None:
    data_dir, ignore = generated
    ones = chexpert_synth.load_chexpert_synth(request(data_dir, uncertain="ones"), no_progress)
    zeros = chexpert_synth.load_chexpert_synth(request(data_dir, uncertain="zeros"), no_progress)
    a, b, c = ignore.train.labels, ones.train.labels, zeros.train.labels
    uncertain = np.isnan(a) & ~np.isnan(b)
    assert uncertain.any() and (b[uncertain] == 1).all() and (c[uncertain] == 0).all()
    same = ~np.isnan(a)
    assert (a[same] == b[same]).all() and (a[same] == c[same]).all()
    assert ignore.info["uncertain"] == "ignore" and ones.info["uncertain"] == "ones"


def test_generation_is_deterministic(generated, tmp_path: Path) -> None:
    data_dir, bundle = generated
    again = chexpert_synth.load_chexpert_synth(request(tmp_path), no_progress)
    assert np.array_equal(again.train.take(slice(None)), bundle.train.take(slice(None)))
    assert again.info["fingerprint"] == bundle.info["fingerprint"]


def test_a_foreign_folder_is_not_overwritten(tmp_path: Path) -> None:
    root = chexpert_synth.dataset_root(request(tmp_path))
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="in the way"):
        chexpert_synth.load_chexpert_synth(request(tmp_path), no_progress)
    assert (root / "notes.txt").read_text() == "mine"
