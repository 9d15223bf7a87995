"""The CheXpert reader: its layout, label conventions (blank, No Finding, −1 under --uncertain), splits
by patient, and one-line errors on bad input. Fixtures are written in CheXpert's own format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtlbench.datasets.base import DataRequest, no_progress
from mtlbench.datasets.chexpert import TASK_OF, read_chexpert
from mtlbench.errors import UserError
from mtlbench.tasks import TASK_NAMES
from tests.dataset_fixtures import truncate, write_chexpert_download

UNLABELLED = [t for t in TASK_NAMES if t not in TASK_OF.values()]


def load(root: Path, tmp_path: Path, **kw):
    request = DataRequest(data_dir=root, image_size=kw.pop("image_size", 16), cache_dir=tmp_path / "cache", **kw)
    return read_chexpert(root, request, no_progress)


def labels_by_path(bundle) -> dict[str, np.ndarray]:
    return {i: row for split in bundle.splits().values() for i, row in zip(split.image_ids, split.labels)}


@pytest.fixture
def download(tmp_path: Path) -> tuple[Path, dict[str, pd.DataFrame]]:
    root = tmp_path / "CheXpert-v1.0-small"
    return root, write_chexpert_download(root)


def test_labels_follow_the_table_and_uncertain_policy(download, tmp_path: Path) -> None:
    root, tables = download
    table = pd.concat([pd.read_csv(root / name) for name in tables], ignore_index=True)  # as written
    table["id"] = [str(Path(*Path(p).parts[1:]).as_posix()) for p in table["Path"]]
    raw = table.set_index("id")
    assert (raw[list(TASK_OF)] == -1).to_numpy().sum() > 10  # the fixture has uncertain labels to map
    for policy, uncertain_value in (("ignore", np.nan), ("zeros", 0.0), ("ones", 1.0)):
        got = labels_by_path(load(root, tmp_path, uncertain=policy))
        assert set(got) == set(raw.index)
        for image, labels in got.items():
            assert labels.dtype == np.float32
            row = raw.loc[image]
            healthy = row["No Finding"] == 1
            for observation, task in TASK_OF.items():
                value, t = row[observation], TASK_NAMES.index(task)
                if value == -1:
                    expected = uncertain_value
                elif pd.isna(value):
                    expected = 0.0 if healthy else np.nan  # blank is missing unless No Finding says negative
                else:
                    expected = value
                assert (np.isnan(labels[t]) and np.isnan(expected)) or labels[t] == expected, (image, task, policy)
            assert np.isnan(labels[[TASK_NAMES.index(t) for t in UNLABELLED]]).all()


def test_splits_are_patient_disjoint_and_test_is_carved_from_train(download, tmp_path: Path) -> None:
    root, tables = download
    bundle = load(root, tmp_path)
    patients = {k: set(s.patient_ids) for k, s in bundle.splits().items()}
    assert not (patients["train"] & patients["test"]) and not (patients["val"] & patients["train"])
    valid = {str(Path(*Path(p).parts[1:]).as_posix()) for p in tables["valid.csv"]["Path"]}
    assert set(bundle.val.image_ids) == valid  # valid.csv is the validation split
    assert all(i.startswith("train/") for i in bundle.test.image_ids)
    carved = bundle.info["test_carved"]
    assert carved["patients"] == len(patients["test"]) == round(0.1 * 24)
    other_seed = load(root, tmp_path, data_seed=1)
    assert set(other_seed.test.patient_ids) != patients["test"]  # seeded
    assert bundle.info["fingerprint"] != other_seed.info["fingerprint"]


def test_test_csv_is_the_test_split_when_there_is_one(tmp_path: Path) -> None:
    root = tmp_path / "CheXpert-v1.0"
    tables = write_chexpert_download(root, test_patients=5)
    bundle = load(root, tmp_path)
    assert len(bundle.test) == len(tables["test.csv"]) and "test_carved" not in bundle.info
    assert len(bundle.train) == len(tables["train.csv"])


def test_views_and_images(download, tmp_path: Path) -> None:
    root, tables = download
    every = load(root, tmp_path)
    frontal = load(root, tmp_path, views="frontal")
    laterals = sum((t["Frontal/Lateral"] == "Lateral").sum() for t in tables.values())
    assert laterals > 0
    total = lambda b: sum(len(s) for s in b.splits().values())  # noqa: E731
    assert total(every) - total(frontal) == laterals
    assert all("lateral" not in i for s in frontal.splits().values() for i in s.image_ids)
    assert every.train.take(slice(0, 2)).shape == (2, 16, 16)


def test_a_renamed_folder_still_reads(download, tmp_path: Path) -> None:
    root, _ = download
    renamed = root.rename(tmp_path / "chexpert-elsewhere")
    assert len(load(renamed, tmp_path).train) > 0


@pytest.mark.parametrize(
    "fault, message",
    [
        ("drop-column", "lacks column(s) 'Pleural Effusion'"),
        ("bad-value", "Edema is '2.0'"),
        ("outside", "points outside the dataset folder"),
        ("no-valid", "no valid.csv"),
    ],
)
def test_bad_tables_are_one_line_errors(download, tmp_path: Path, fault: str, message: str) -> None:
    root, tables = download
    table = tables["train.csv"].copy()
    if fault == "drop-column":
        table = table.drop(columns=["Pleural Effusion"])
    elif fault == "bad-value":
        table.loc[3, "Edema"] = "2.0"
    elif fault == "outside":
        table.loc[2, "Path"] = "CheXpert-v1.0-small/../../etc/passwd"
    table.to_csv(root / "train.csv", index=False)
    if fault == "no-valid":
        (root / "valid.csv").unlink()
    with pytest.raises(UserError) as err:
        load(root, tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing half-built


def test_missing_images_stop_the_load_unless_allowed(download, tmp_path: Path) -> None:
    root, tables = download
    (root / Path(*Path(tables["train.csv"]["Path"][0]).parts[1:])).unlink()
    with pytest.raises(UserError, match="listed images are missing.*--allow-missing"):
        load(root, tmp_path)
    partial = load(root, tmp_path, allow_missing=True)
    assert partial.info["missing"]["train"] + partial.info["missing"]["test"] == 1


def test_unreadable_jpegs_stop_the_load_unless_allowed(download, tmp_path: Path) -> None:
    root, tables = download
    truncate(root / Path(*Path(tables["valid.csv"]["Path"][1]).parts[1:]))
    with pytest.raises(UserError, match="cannot be read.*--allow-missing"):
        load(root, tmp_path)
    partial = load(root, tmp_path, allow_missing=True)
    assert partial.info["unreadable"]["val"] == 1 and len(partial.val) == len(tables["valid.csv"]) - 1
