"""PadChest (Bustos et al., Medical Image Analysis 2020), as BIMCV distributes it.

    ROOT/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv(.gz)   one row per image: ImageID, ImageDir,
                                            PatientID, Projection, Labels (a list literal, e.g.
                                            "['pleural effusion', 'cardiomegaly']"), ...
    ROOT/0/<ImageID> … ROOT/54/<ImageID>    16-bit PNGs, in the numbered folders of the download's zips

Labels for the 14 NIH tasks come from PadChest's 174 radiological findings: a task is positive when one
of its findings (TASK_FINDINGS) is among the image's labels. The findings follow torchxrayvision's
PC_Dataset (its pathology names and synonyms, which it matches as substrings of the label string) with
whole-label matching, which leaves out what a substring match catches by accident: "pseudonodule" (it is
not a nodule), "pericardial effusion", "subcutaneous emphysema", "breast mass" and "soft tissue mass".
An image without labels, or whose only label is "unchanged" (the report says only that nothing changed,
so no finding is stated), has all 14 labels missing. There is no official split: a seeded
TEST_PATIENT_FRACTION of the patients is test and `--val-fraction` of the rest validation.
"""

from __future__ import annotations

import ast
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

DATASET_NAME = "padchest"
CSV_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
REQUIRED_COLUMNS = ("ImageID", "ImageDir", "PatientID", "Projection", "Labels")
TEST_PATIENT_FRACTION = 0.2
TASK_FINDINGS: dict[str, frozenset[str]] = {
    "Atelectasis": frozenset(
        {"atelectasis", "laminar atelectasis", "segmental atelectasis", "lobar atelectasis", "atelectasis basal",
         "total atelectasis", "round atelectasis"}
    ),
    "Cardiomegaly": frozenset({"cardiomegaly"}),
    "Effusion": frozenset({"pleural effusion", "loculated pleural effusion", "loculated fissural effusion"}),
    "Infiltration": frozenset(  # torchxrayvision's synonyms for Infiltration
        {"infiltrates", "interstitial pattern", "ground glass pattern", "reticular interstitial pattern",
         "reticulonodular interstitial pattern", "alveolar pattern", "consolidation", "air bronchogram"}
    ),
    "Mass": frozenset({"mass", "pulmonary mass", "mediastinal mass", "pleural mass"}),
    "Nodule": frozenset({"nodule", "multiple nodules"}),
    "Pneumonia": frozenset({"pneumonia", "atypical pneumonia"}),
    "Pneumothorax": frozenset({"pneumothorax", "hydropneumothorax"}),
    "Consolidation": frozenset({"consolidation", "air bronchogram"}),
    "Edema": frozenset({"pulmonary edema"}),
    "Emphysema": frozenset({"emphysema"}),
    "Fibrosis": frozenset({"pulmonary fibrosis"}),
    "Pleural_Thickening": frozenset({"pleural thickening", "apical pleural thickening", "calcified pleural thickening"}),
    "Hernia": frozenset({"hiatal hernia"}),
}  # fmt: skip
NO_STATED_FINDING = frozenset({"unchanged"})
VIEWS = {"PA": "PA", "AP": "AP", "AP_horizontal": "AP", "L": "LATERAL"}  # others (COSTAL, EXCLUDE, UNK) kept as named
_VAL_STREAM, _TEST_STREAM = 0x9AC1, 0x9AC7
_FIX = "restore it from the PadChest download"


def find_csv(root: Path) -> Path:
    """The PadChest table under root (.csv or .csv.gz)."""
    path = next((p for p in (root / CSV_NAME, root / f"{CSV_NAME}.gz") if p.is_file()), None)
    if path is None:
        raise UserError(
            f"{DATASET_NAME}: no {CSV_NAME}(.gz) in {root}; pass --data-dir pointing to the PadChest folder"
        )
    return path


def read_padchest_csv(path: Path) -> pd.DataFrame:
    """The PadChest table, its columns checked (one-line UserErrors)."""
    dtype = {"ImageID": str, "PatientID": str, "Labels": str}
    return read_csv_table(path, REQUIRED_COLUMNS, f"it must be the PadChest table; {_FIX}", dtype)


def parse_labels(text: object, where: str) -> list[str] | None:
    """A Labels cell as its findings (stripped, lower case); None for a blank cell. A cell that is not a list
    of strings is a one-line UserError naming `where`."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: Labels {text[:60]!r} is not a list of findings like \"['cardiomegaly']\"; {_FIX}")
    return [v.strip().lower() for v in value]


def task_labels(cells: pd.Series, source: Path) -> np.ndarray:
    """(N, 14) float32 in TASK_NAMES order from the Labels column; NaN rows where no finding is stated."""
    out = np.zeros((len(cells), len(TASK_NAMES)), dtype=np.float32)
    for row, text in enumerate(cells.tolist()):
        findings = parse_labels(text, f"{source} line {row + 2}")
        if findings is None or not set(findings) - NO_STATED_FINDING:
            out[row] = np.nan
            continue
        stated = set(findings)
        for t, task in enumerate(TASK_NAMES):
            out[row, t] = float(bool(stated & TASK_FINDINGS[task]))
    return out


def padchest_table(root: Path, request: DataRequest) -> tuple[ImageTable, dict]:
    """The ImageTable of a PadChest folder, its splits carved by patient."""
    path = find_csv(root)
    table = read_padchest_csv(path)
    relative = []
    for line, (folder, image) in enumerate(zip(table["ImageDir"], table["ImageID"]), start=2):
        name = f"{int(folder)}/{image}" if pd.notna(folder) and str(folder).strip().isdigit() else None
        if name is None:
            raise UserError(f"{path} line {line}: ImageDir {folder!r} is not a folder number; {_FIX}")
        resolve_under(root, name, f"{path} line {line}")
        relative.append(name)
    ids = np.array(relative, dtype=str)
    if pd.Series(ids).duplicated().any():
        raise UserError(f"{path} lists image {ids[pd.Series(ids).duplicated().to_numpy()][0]!r} twice; {_FIX}")
    patients = table["PatientID"].astype(str).to_numpy()
    rows = np.arange(len(table))
    test = carve_patients(rows, patients, TEST_PATIENT_FRACTION, request.data_seed, _TEST_STREAM)
    rest = np.setdiff1d(rows, test)
    val = carve_patients(rest, patients, request.val_fraction, request.data_seed, _VAL_STREAM)
    splits = np.full(len(table), "train", dtype=object)
    splits[test], splits[val] = "test", "val"
    labels = task_labels(table["Labels"], path)
    image_table = ImageTable(
        image_ids=ids,
        patient_ids=patients,
        views=table["Projection"].astype(str).map(lambda p: VIEWS.get(p, p.upper())).to_numpy().astype(str),
        labels=labels,
        splits=splits.astype(str),
    )
    info = {
        "csv": path.name,
        "test_patient_fraction": TEST_PATIENT_FRACTION,
        "val_fraction": request.val_fraction,
        "images_without_stated_findings": int(np.isnan(labels[:, 0]).sum()),
    }
    return image_table, info


def read_padchest(
    root: Path, request: DataRequest, progress: ProgressFactory, name: str = DATASET_NAME
) -> DatasetBundle:
    """A PadChest folder (the download or padchest-synth's) as train/val/test splits by patient."""
    return read_table_dataset(name, root, request, progress, padchest_table)


@register_dataset(DATASET_NAME)
def load_padchest(request: DataRequest, progress: ProgressFactory) -> DatasetBundle:
    """PadChest at --data-dir."""
    return read_padchest(Path(request.data_dir), request, progress)
