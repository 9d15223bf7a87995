"""MIMIC-CXR-JPG 2.x (Johnson et al., PhysioNet), as PhysioNet distributes it.

    ROOT/mimic-cxr-2.0.0-chexpert.csv(.gz)   one row per study: subject_id, study_id and CheXpert's 14
                                             observations (1.0, 0.0, -1.0 uncertain, blank); or -negbio
    ROOT/mimic-cxr-2.0.0-split.csv(.gz)      dicom_id, study_id, subject_id, split (train / validate / test)
    ROOT/mimic-cxr-2.0.0-metadata.csv(.gz)   dicom_id, ..., ViewPosition (PA, AP, LATERAL, LL, ...)
    ROOT/files/p10/p10000032/s50414267/<dicom_id>.jpg …

Labels are per study and every image of a study gets them; the 14 observations are CheXpert's, mapped to
the NIH tasks and read with the same conventions (datasets/chexpert.py: seven tasks labelled, the others
missing; blank missing unless No Finding is 1; −1 per `--uncertain`). The CheXpert-labeler file is read
when both are there (`mimic-cxr-2.0.0-chexpert` before `-negbio`; which one is stored with every run).
The split is the official one; a study of the split file that the label file lacks has all its labels
missing (counted). Patients are subject_ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory
from mtlbench.datasets.chexpert import OBSERVATIONS, TASK_OF, check_observations, task_labels
from mtlbench.datasets.table_layout import ImageTable, read_csv_table, read_table_dataset
from mtlbench.errors import UserError
from mtlbench.registry import register_dataset
from mtlbench.tasks import TASK_NAMES

DATASET_NAME = "mimic-cxr"
LABEL_FILES = ("mimic-cxr-2.0.0-chexpert.csv", "mimic-cxr-2.0.0-negbio.csv")
SPLIT_FILE, METADATA_FILE = "mimic-cxr-2.0.0-split.csv", "mimic-cxr-2.0.0-metadata.csv"
SPLITS = {"train": "train", "validate": "val", "test": "test"}
_FIX = "restore it from the MIMIC-CXR-JPG download"


def find_table(root: Path, name: str) -> Path | None:
    """`name` or `name`.gz under root (the download has .gz; an unpacked copy works too)."""
    return next((p for p in (root / name, root / f"{name}.gz") if p.is_file()), None)


def read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A MIMIC-CXR table with at least `columns` (ids as whole numbers), as one-line UserErrors when it is not."""
    table = read_csv_table(path, columns, _FIX, {"dicom_id": str})
    for column in ("subject_id", "study_id"):
        if column in columns and not pd.api.types.is_integer_dtype(table[column]):
            raise UserError(f"{path}: {column} must be whole numbers; {_FIX}")
    return table


def mimic_table(root: Path, request: DataRequest) -> tuple[ImageTable, dict]:
    """The ImageTable of a MIMIC-CXR-JPG folder and the provenance of its labels and split."""
    label_path = next((p for p in (find_table(root, n) for n in LABEL_FILES) if p is not None), None)
    split_path, meta_path = find_table(root, SPLIT_FILE), find_table(root, METADATA_FILE)
    for path, name in ((label_path, " or ".join(LABEL_FILES)), (split_path, SPLIT_FILE), (meta_path, METADATA_FILE)):
        if path is None:
            raise UserError(f"{DATASET_NAME}: no {name}(.gz) in {root}; pass --data-dir pointing to MIMIC-CXR-JPG")
    labels = check_observations(read_table(label_path, ("subject_id", "study_id", *OBSERVATIONS)), label_path, _FIX)
    split = read_table(split_path, ("dicom_id", "study_id", "subject_id", "split"))
    meta = read_table(meta_path, ("dicom_id", "ViewPosition"))
    unknown = sorted(set(split["split"].astype(str)) - set(SPLITS))
    if unknown:
        raise UserError(f"{split_path}: split values {unknown} are not train, validate or test; {_FIX}")
    if labels["study_id"].duplicated().any():
        study = labels["study_id"][labels["study_id"].duplicated()].iloc[0]
        raise UserError(f"{label_path} lists study {study} more than once; {_FIX}")
    subject_of = dict(zip(labels["study_id"], labels["subject_id"]))
    disagree = [(s, p) for s, p in zip(split["study_id"], split["subject_id"]) if subject_of.get(s, p) != p]
    if disagree:
        study, subject = disagree[0]
        raise UserError(
            f"{split_path} puts study {study} under subject {subject} but {label_path.name} under subject "
            f"{subject_of[study]} ({len(disagree):,} such row(s)): the two files are from different releases; {_FIX}"
        )
    if split["dicom_id"].duplicated().any():
        raise UserError(f"{split_path} lists image {split['dicom_id'][split['dicom_id'].duplicated()].iloc[0]} twice")
    images = split.merge(labels.drop(columns="subject_id"), on="study_id", how="left")
    view = dict(zip(meta["dicom_id"], meta["ViewPosition"].fillna("").astype(str).str.upper()))
    relative = [
        f"files/p{str(s)[:2]}/p{s}/s{st}/{d}.jpg"
        for s, st, d in zip(images["subject_id"], images["study_id"], images["dicom_id"])
    ]
    unlabelled_studies = int(images.loc[~images["study_id"].isin(subject_of), "study_id"].nunique())
    table = ImageTable(
        image_ids=np.array(relative, dtype=str),
        patient_ids=images["subject_id"].astype(str).to_numpy(),
        views=np.array([view.get(d, "") for d in images["dicom_id"]], dtype=str),
        labels=task_labels(images, request.uncertain),
        splits=images["split"].map(SPLITS).to_numpy().astype(str),
    )
    info = {
        "label_file": label_path.name,
        "uncertain": request.uncertain,
        "uncertain_labels": int((images[list(TASK_OF)] == -1).to_numpy().sum()),
        "studies_without_labels": unlabelled_studies,
        "tasks_labelled": [t for t in TASK_NAMES if t in TASK_OF.values()],
    }
    return table, info


def read_mimic_cxr(root: Path, request: DataRequest, progress: ProgressFactory) -> DatasetBundle:
    """A MIMIC-CXR-JPG folder as its official train/validate/test splits."""
    return read_table_dataset(DATASET_NAME, root, request, progress, mimic_table)


@register_dataset(DATASET_NAME)
def load_mimic_cxr(request: DataRequest, progress: ProgressFactory) -> DatasetBundle:
    """MIMIC-CXR-JPG 2.x at --data-dir."""
    return read_mimic_cxr(Path(request.data_dir), request, progress)
