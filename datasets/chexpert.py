"""CheXpert (Irvin et al., AAAI 2019), as Stanford distributes it: CheXpert-v1.0 or CheXpert-v1.0-small.

    ROOT/train.csv                 one row per image: Path, Sex, Age, Frontal/Lateral, AP/PA and 14
    ROOT/valid.csv                 observation columns valued 1.0 (positive), 0.0 (negative), -1.0
    ROOT/test.csv      (optional)  (uncertain) or blank (not mentioned)
    ROOT/train/patient00001/study1/view1_frontal.jpg …
    ROOT/valid/patient64541/study1/view1_frontal.jpg …

`Path` starts with the download's folder name (CheXpert-v1.0-small/train/…): it is read relative to
ROOT whatever ROOT is called. Splits: valid.csv is the validation split; test.csv, where there is one
(e.g. the test set's released labels in these columns; chexpert-synth writes one), is the test split,
else a seeded TEST_PATIENT_FRACTION of train.csv's patients is carved out as test (their count and a
digest of their IDs are stored with every run). Patients never straddle two splits.

Labels for the 14 NIH tasks: CheXpert labels seven of them (Atelectasis, Cardiomegaly, Consolidation,
Edema, Pleural Effusion → Effusion, Pneumonia, Pneumothorax: torchxrayvision's CheX_Dataset maps the
same names); the other seven are missing (NaN) for every image. Blank is missing; an image whose
"No Finding" is 1 has its blank findings negative (the report states no finding; torchxrayvision's
rule, Support Devices aside). Uncertain (−1) follows `--uncertain`: ignore (missing), zeros or ones
(the paper's U-Ignore, U-Zeros, U-Ones). torchxrayvision folds −1 into NaN as it reads, so its reader
cannot serve `--uncertain zeros|ones`: the table is parsed here, with its conventions.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory
from mtlbench.datasets.table_layout import (
    ImageTable,
    carve_patients,
    read_csv_table,
    read_table_dataset,
    resolve_under,
)
from mtlbench.errors import UserError
from mtlbench.registry import register_dataset
from mtlbench.tasks import TASK_NAMES

DATASET_NAME = "chexpert"
TRAIN_CSV, VALID_CSV, TEST_CSV = "train.csv", "valid.csv", "test.csv"
TEST_PATIENT_FRACTION = 0.1  # of train.csv's patients, when there is no test.csv
OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
# CheXpert observation → NIH task, where CheXpert labels one of the 14
TASK_OF: dict[str, str] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Pleural Effusion": "Effusion",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
}
REQUIRED_COLUMNS: tuple[str, ...] = ("Path", "Frontal/Lateral", "AP/PA") + OBSERVATIONS
UNCERTAIN_AS = {"ignore": np.nan, "zeros": 0.0, "ones": 1.0}
_TEST_STREAM = 0xC7E5
_PATIENT = re.compile(r"(patient\d+)")


def read_chexpert_csv(path: Path) -> pd.DataFrame:
    """A CheXpert table, its columns and label values checked (one-line UserErrors naming the file and line)."""
    fix = "restore it from the CheXpert download (it needs Path, Frontal/Lateral, AP/PA and the 14 observations)"
    table = check_observations(read_csv_table(path, REQUIRED_COLUMNS, fix, {"Path": str}), path, fix)
    empty = np.flatnonzero(table["Path"].isna().to_numpy())
    if len(empty):
        raise UserError(f"{path} line {empty[0] + 2} has no Path; {fix}")
    return table


def check_observations(table: pd.DataFrame, path: Path, fix: str) -> pd.DataFrame:
    """`table` with its 14 observation columns as numbers; a value other than 1, 0, −1 or blank is a one-line
    UserError naming the file, line and column (CheXpert's and MIMIC-CXR's label files share the format)."""
    for column in OBSERVATIONS:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = np.flatnonzero((table[column].notna() & ~values.isin([1.0, 0.0, -1.0])).to_numpy())
        if len(bad):
            raise UserError(
                f"{path} line {bad[0] + 2}: {column} is {str(table[column].iloc[bad[0]])!r}; labels are "
                f"1.0, 0.0, -1.0 (uncertain) or blank ({len(bad):,} such value(s)); {fix}"
            )
        table[column] = values
    return table


def task_labels(table: pd.DataFrame, uncertain: str) -> np.ndarray:
    """(N, 14) float32 in TASK_NAMES order from CheXpert's observation columns: NaN where missing
    (blank, a task CheXpert does not label, or −1 under `ignore`), −1 as `uncertain` says."""
    if uncertain not in UNCERTAIN_AS:
        raise UserError(f"unknown --uncertain {uncertain!r}; valid: {', '.join(UNCERTAIN_AS)}")
    labels = np.full((len(table), len(TASK_NAMES)), np.nan, dtype=np.float32)
    healthy = (table["No Finding"] == 1).to_numpy()
    for observation, task in TASK_OF.items():
        column = table[observation].to_numpy(dtype=np.float32)
        column = np.where(np.isnan(column) & healthy, np.float32(0), column)
        column = np.where(column == -1, np.float32(UNCERTAIN_AS[uncertain]), column)
        labels[:, TASK_NAMES.index(task)] = column
    return labels


def views_of(table: pd.DataFrame) -> np.ndarray:
    """ "PA" / "AP" for a frontal image (its AP/PA column), "LATERAL" otherwise."""
    frontal = table["Frontal/Lateral"].astype(str).str.lower() == "frontal"
    return np.where(frontal, table["AP/PA"].fillna("").astype(str).str.upper(), "LATERAL")


def image_paths(table: pd.DataFrame, root: Path, source: Path) -> np.ndarray:
    """Each row's image path under `root` (Path without its first part, the download's folder name)."""
    out = []
    for line, text in enumerate(table["Path"].astype(str), start=2):
        parts = Path(text).parts
        relative = Path(*parts[1:]) if len(parts) > 1 and parts[0] not in ("train", "valid", "test") else Path(text)
        resolve_under(root, str(relative), f"{source} line {line}")
        out.append(relative.as_posix())
    return np.array(out, dtype=object)


def patients_of(paths: np.ndarray, source: Path) -> np.ndarray:
    """The patientNNNNN folder of each path."""
    found = [_PATIENT.search(p) for p in paths]
    bad = [i for i, m in enumerate(found) if m is None]
    if bad:
        raise UserError(f"{source} line {bad[0] + 2}: path {paths[bad[0]]!r} names no patientNNNNN folder")
    return np.array([m.group(1) for m in found], dtype=object)


def chexpert_table(root: Path, request: DataRequest) -> tuple[ImageTable, dict]:
    """The ImageTable of a CheXpert folder and the provenance of its splits."""
    parts, splits = [], []
    for csv, split in ((TRAIN_CSV, "train"), (VALID_CSV, "val"), (TEST_CSV, "test")):
        if not (root / csv).is_file():
            if csv == TEST_CSV:
                continue
            raise UserError(f"{DATASET_NAME}: no {csv} in {root}; pass --data-dir pointing to the CheXpert folder")
        table = read_chexpert_csv(root / csv)
        table["relative"] = image_paths(table, root, root / csv)
        table["patient"] = patients_of(table["relative"].to_numpy(), root / csv)
        parts.append(table)
        splits.append(np.full(len(table), split, dtype=object))
    table = pd.concat(parts, ignore_index=True)
    split = np.concatenate(splits)
    duplicated = table["relative"].duplicated().to_numpy()
    if duplicated.any():
        raise UserError(
            f"{DATASET_NAME}: image {table['relative'].iloc[np.flatnonzero(duplicated)[0]]!r} is listed twice"
        )
    patients = table["patient"].to_numpy()
    info: dict = {"tables": [p for p in (TRAIN_CSV, VALID_CSV, TEST_CSV) if (root / p).is_file()]}
    if "test" not in split:
        train_rows = np.flatnonzero(split == "train")
        test_rows = carve_patients(train_rows, patients, TEST_PATIENT_FRACTION, request.data_seed, _TEST_STREAM)
        split[test_rows] = "test"
        test_patients = sorted(set(patients[test_rows].tolist()))
        info["test_carved"] = {
            "fraction_of_train_patients": TEST_PATIENT_FRACTION,
            "data_seed": request.data_seed,
            "patients": len(test_patients),
            "patients_sha1": hashlib.sha1("\n".join(test_patients).encode()).hexdigest()[:16],
        }
    labels = task_labels(table, request.uncertain)
    info["uncertain"] = request.uncertain
    info["uncertain_labels"] = int((table[list(TASK_OF)] == -1).to_numpy().sum())
    image_table = ImageTable(
        image_ids=table["relative"].to_numpy().astype(str),
        patient_ids=patients.astype(str),
        views=views_of(table),
        labels=labels,
        splits=split.astype(str),
    )
    return image_table, info


def read_chexpert(
    root: Path, request: DataRequest, progress: ProgressFactory, name: str = DATASET_NAME
) -> DatasetBundle:
    """A CheXpert folder (the real download or chexpert-synth's) as train/val/test splits."""
    return read_table_dataset(name, root, request, progress, chexpert_table)


@register_dataset(DATASET_NAME)
def load_chexpert(request: DataRequest, progress: ProgressFactory) -> DatasetBundle:
    """CheXpert-v1.0(-small) at --data-dir."""
    return read_chexpert(Path(request.data_dir), request, progress)
