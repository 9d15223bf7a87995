"""The MIMIC-CXR-JPG reader: study labels on every image, the official split, views from the metadata, and
one-line errors when its files disagree. Fixtures are written in the download's own format (.csv.gz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtlbench.datasets.base import DataRequest, no_progress
from mtlbench.datasets.chexpert import TASK_OF
from mtlbench.datasets.mimic_cxr import read_mimic_cxr
from mtlbench.errors import UserError
from mtlbench.tasks import TASK_NAMES
from tests.dataset_fixtures import write_mimic_download

SPLIT = "mimic-cxr-2.0.0-split.csv"


def load(root: Path, tmp_path: Path, **kw):
    request = DataRequest(data_dir=root, image_size=16, cache_dir=tmp_path / "cache", **kw)
    return read_mimic_cxr(root, request, no_progress)


@pytest.fixture
def download(tmp_path: Path):
    root = tmp_path / "mimic-cxr-jpg" / "2.0.0"
    root.mkdir(parents=True)
    return root, write_mimic_download(root)


def test_official_split_and_study_labels_on_every_image(download, tmp_path: Path) -> None:
    root, tables = download
    bundle = load(root, tmp_path, uncertain="ones")
    split = tables[SPLIT]
    for name, expected in (("train", "train"), ("val", "validate"), ("test", "test")):
        assert len(getattr(bundle, name)) == int((split["split"] == expected).sum())
    studies = tables["mimic-cxr-2.0.0-chexpert.csv"].set_index("study_id")
    t = TASK_NAMES.index("Effusion")
    for image_id, labels in zip(bundle.train.image_ids, bundle.train.labels):
        study = int(Path(image_id).parent.name[1:])
        value = studies.loc[study, "Pleural Effusion"]
        healthy = studies.loc[study, "No Finding"] == 1
        expected = 1.0 if value == -1 else (0.0 if healthy else np.nan) if pd.isna(value) else value
        assert (np.isnan(expected) and np.isnan(labels[t])) or labels[t] == expected
        assert np.isnan(labels[[TASK_NAMES.index(x) for x in TASK_NAMES if x not in TASK_OF.values()]]).all()
    assert bundle.info["label_file"] == "mimic-cxr-2.0.0-chexpert.csv.gz" and bundle.info["uncertain"] == "ones"


def test_views_come_from_the_metadata(download, tmp_path: Path) -> None:
    root, tables = download
    laterals = int((tables["mimic-cxr-2.0.0-metadata.csv"]["ViewPosition"] == "LATERAL").sum())
    total = lambda b: sum(len(s) for s in b.splits().values())  # noqa: E731
    assert total(load(root, tmp_path)) - total(load(root, tmp_path, views="frontal")) == laterals > 0


def test_a_study_without_labels_has_missing_labels(download, tmp_path: Path) -> None:
    root, tables = download
    labels = tables["mimic-cxr-2.0.0-chexpert.csv"]
    dropped = int(labels["study_id"].iloc[0])
    labels.iloc[1:].to_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    bundle = load(root, tmp_path)
    assert bundle.info["studies_without_labels"] == 1
    rows = [i for i, n in enumerate(bundle.train.image_ids) if f"/s{dropped}/" in n]
    assert rows and np.isnan(bundle.train.labels[rows]).all()


@pytest.mark.parametrize(
    "fault, message",
    [
        ("subject", "puts study"),
        ("split-value", "are not train, validate or test"),
        ("label-value", "Edema is '3.0'"),
        ("no-metadata", "no mimic-cxr-2.0.0-metadata.csv"),
    ],
)
def test_files_that_disagree_are_one_line_errors(download, tmp_path: Path, fault: str, message: str) -> None:
    root, tables = download
    if fault == "subject":
        split = tables[SPLIT].copy()
        split.loc[0, "subject_id"] += 1
        split.to_csv(root / f"{SPLIT}.gz", index=False)
    elif fault == "split-value":
        split = tables[SPLIT].copy()
        split.loc[2, "split"] = "holdout"
        split.to_csv(root / f"{SPLIT}.gz", index=False)
    elif fault == "label-value":
        labels = tables["mimic-cxr-2.0.0-chexpert.csv"].astype({"Edema": object})
        labels.loc[1, "Edema"] = "3.0"
        labels.to_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    else:
        (root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(UserError) as err:
        load(root, tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "cache").exists()  # refused before any cache is built


def test_missing_jpegs_need_allow_missing(download, tmp_path: Path) -> None:
    root, _ = download
    next((root / "files").rglob("*.jpg")).unlink()
    with pytest.raises(UserError, match="--allow-missing"):
        load(root, tmp_path)
    assert sum(load(root, tmp_path, allow_missing=True).info["missing"].values()) == 1
