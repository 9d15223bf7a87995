"""Writers of dataset files for tests: NIH ChestX-ray14 downloads (real names, patients and labels,
rendered pixels) and ChestMNIST npz files in MedMNIST's format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mtlbench.datasets.chestmnist import npz_name
from mtlbench.datasets.cxr14_synth import nih_sample, render
from mtlbench.datasets.nih_layout import parse_finding_labels
from mtlbench.datasets.nih_tables import read_nih_table

ARCHIVES = 12
CHESTMNIST_COUNTS = {"train": 30, "val": 8, "test": 12}


@dataclass(frozen=True)
class NihDownload:
    """What a fixture wrote: its root, metadata rows, the two official lists and each image's path."""

    root: Path
    rows: pd.DataFrame
    train_val: list[str]
    test: list[str]
    paths: dict[str, Path]

    def patient_of(self) -> dict[str, int]:
        """{image name: patient id}."""
        return dict(zip(self.rows["Image Index"], self.rows["Patient ID"].astype(int)))


def write_nih_download(
    root: Path,
    count: int = 120,
    size: int = 48,
    layout: str = "flat",
    csv: str = "v2020",
    seed: int = 0,
    table: pd.DataFrame | None = None,
) -> NihDownload:
    """An NIH download of `count` real metadata rows with synthetic pixels at `size` px.

    layout "flat": images/<name>; "archives": images_001/images … images_012/images, filled in
    name order as the real archives are. csv "v2020": Data_Entry_2017_v2020.csv with a
    `Patient Sex` column; "2017": Data_Entry_2017.csv with `Patient Gender` and the original
    trailing empty column; "none": no CSV (the loader falls back to torchxrayvision's copy).
    """
    rows = nih_sample.sample_nih_rows(count, seed, read_nih_table() if table is None else table)
    labels = parse_finding_labels(rows["Finding Labels"], "fixture").astype(bool)
    images = render.render_images(rows, labels, size, seed)
    names = rows["Image Index"].tolist()
    paths: dict[str, Path] = {}
    per_archive = -(-count // ARCHIVES)
    for i, (name, image) in enumerate(zip(names, images)):
        folder = root / "images" if layout == "flat" else root / f"images_{i // per_archive + 1:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        paths[name] = folder / name
        Image.fromarray(image, mode="L").save(paths[name])
    train_val, test = nih_sample.split_test_patients(rows, seed)
    (root / "train_val_list.txt").write_text("".join(f"{n}\n" for n in train_val))
    (root / "test_list.txt").write_text("".join(f"{n}\n" for n in test))
    if csv == "v2020":
        rows.rename(columns={"Patient Gender": "Patient Sex"}).to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    elif csv == "2017":
        text = rows.to_csv(index=False, lineterminator="\n")
        lines = [line + "," for line in text.splitlines()]  # the 2017 file ends every line with a comma
        (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    return NihDownload(root, rows, train_val, test, paths)


def save_as(path: Path, mode: str) -> None:
    """Rewrite a grayscale PNG as RGBA or 16-bit, keeping what it shows."""
    gray = np.asarray(Image.open(path).convert("L"))
    if mode == "RGBA":
        rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
        Image.fromarray(rgba, mode="RGBA").save(path)
    elif mode == "I;16":
        Image.fromarray(gray.astype(np.uint16) * 257).save(path)
    else:
        raise ValueError(mode)


def truncate(path: Path) -> None:
    """Cut a file to half its length, as an interrupted download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_npz(folder: Path, size: int = 28, counts=CHESTMNIST_COUNTS, seed: int = 0, **replace) -> Path:
    """A file in MedMNIST's format: {split}_images (N, S, S) uint8 and {split}_labels (N, 14)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in counts.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (rng.random((n, 14)) < 0.2).astype(np.uint8)
    arrays.update(replace)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / npz_name(size)
    np.savez_compressed(path, **arrays)
    return path


DATA_ENTRY_FAULTS: tuple[str, ...] = (
    "unknown-label",
    "blank-finding-labels",
    "no-finding-labels-column",
    "no-patient-id-column",
    "ragged-row",
    "header-only",
    "empty",
    "binary",
)


def break_data_entry(root: Path, fault: str, row: int = 3) -> Path:
    """Damage the metadata CSV of a download written by `write_nih_download` (csv "v2020" or "2017").

    "unknown-label": data row `row` (0-based; on line row + 2) gets the finding "Covid-19";
    "blank-finding-labels": that row's findings are left empty; "no-finding-labels-column" and
    "no-patient-id-column" drop that column; "ragged-row": that row gets three extra fields;
    "header-only" keeps only the header line; "empty" leaves 0 bytes; "binary" replaces the file
    with bytes that are no text at all. Returns the CSV's path.
    """
    path = next(root / n for n in ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv") if (root / n).is_file())
    if fault in ("unknown-label", "blank-finding-labels"):
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        table.loc[row, "Finding Labels"] = "Pneumonia|Covid-19" if fault == "unknown-label" else ""
        table.to_csv(path, index=False)
    elif fault == "ragged-row":
        lines = path.read_text().splitlines()
        lines[row + 1] += ",x,y,z"
        path.write_text("\n".join(lines) + "\n")
    elif fault in ("no-finding-labels-column", "no-patient-id-column"):
        column = "Finding Labels" if fault == "no-finding-labels-column" else "Patient ID"
        pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=[column]).to_csv(path, index=False)
    elif fault == "header-only":
        path.write_text(path.read_text().splitlines()[0] + "\n")
    elif fault == "empty":
        path.write_bytes(b"")
    elif fault == "binary":
        path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    else:
        raise ValueError(fault)
    return path


CHEXPERT_OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)  # fmt: skip


def chexpert_rows(patients: int, first: int, split: str, folder: str = "CheXpert-v1.0-small", seed: int = 0):
    """Rows of a CheXpert table in its real format: `patients` patients from patient number `first`, one or
    two studies each, a frontal view (AP or PA) and now and then a lateral; observations 1.0 / 0.0 / -1.0 /
    blank at CheXpert-like rates; Path under `folder`/`split`/."""
    rng = np.random.default_rng([seed, first])
    rows = []
    for p in range(first, first + patients):
        for study in range(1, 2 + p % 2):
            views = [("view1_frontal.jpg", "Frontal", "AP" if p % 3 else "PA")]
            if p % 4 == 0:
                views.append(("view2_lateral.jpg", "Lateral", ""))
            for name, fl, appa in views:
                row = {
                    "Path": f"{folder}/{split}/patient{p:05d}/study{study}/{name}",
                    "Sex": "Female" if p % 2 else "Male",
                    "Age": 30 + p % 50,
                    "Frontal/Lateral": fl,
                    "AP/PA": appa,
                }
                healthy = rng.random() < 0.15
                for obs in CHEXPERT_OBSERVATIONS:
                    if obs == "No Finding":
                        row[obs] = 1.0 if healthy else ""
                    else:
                        row[obs] = "" if healthy else rng.choice([1.0, 0.0, -1.0, ""], p=[0.3, 0.2, 0.15, 0.35])
                rows.append(row)
    return pd.DataFrame(rows)


def write_chexpert_download(
    root: Path, train_patients: int = 24, valid_patients: int = 6, size: int = 40, test_patients: int = 0
) -> dict[str, pd.DataFrame]:
    """A CheXpert-v1.0-small folder: train.csv, valid.csv (and test.csv with `test_patients`) in the real
    columns, and a JPEG per row at patientNNNNN/studyN/viewK_*.jpg. Returns the tables by file name."""
    tables = {
        "train.csv": chexpert_rows(train_patients, 1, "train"),
        "valid.csv": chexpert_rows(valid_patients, 64541, "valid"),
    }
    if test_patients:
        tables["test.csv"] = chexpert_rows(test_patients, 64741, "test")
    rng = np.random.default_rng(7)
    for name, table in tables.items():
        table.to_csv(root / name if root.is_dir() else _mkdir(root) / name, index=False)
        for path in table["Path"]:
            target = root / Path(*Path(path).parts[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size + 8), dtype=np.uint8), mode="L").save(target, "JPEG")
    return tables


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_mimic_download(root: Path, subjects: int = 30, size: int = 32, gz: bool = True) -> dict[str, pd.DataFrame]:
    """A MIMIC-CXR-JPG 2.x folder: the chexpert, split and metadata tables (gzipped like the download) and a
    JPEG per image at files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg. The last 20% of subjects are test, the
    10% before them validate. Returns the tables by file name (without .gz)."""
    rng = np.random.default_rng(11)
    labels, split, meta = [], [], []
    for k in range(subjects):
        subject = 10000000 + 37 * k
        part = "test" if k >= subjects * 0.8 else "validate" if k >= subjects * 0.7 else "train"
        for s in range(1 + k % 2):
            study = 50000000 + 100 * k + s
            row = {"subject_id": subject, "study_id": study}
            healthy = rng.random() < 0.15
            for obs in CHEXPERT_OBSERVATIONS:
                if obs == "No Finding":
                    row[obs] = 1.0 if healthy else np.nan
                else:
                    row[obs] = np.nan if healthy else rng.choice([1.0, 0.0, -1.0, np.nan], p=[0.3, 0.2, 0.15, 0.35])
            labels.append(row)
            for v, view in enumerate(["PA" if k % 3 else "AP"] + (["LATERAL"] if k % 4 == 0 else [])):
                dicom = f"{k:08x}-{s:08x}-{v:08x}-aaaaaaaa-bbbbbbbb"
                split.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": part})
                meta.append({"dicom_id": dicom, "subject_id": subject, "study_id": study, "ViewPosition": view})
                target = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (size, size + 6), dtype=np.uint8), mode="L").save(target, "JPEG")
    tables = {
        "mimic-cxr-2.0.0-chexpert.csv": pd.DataFrame(labels),
        "mimic-cxr-2.0.0-split.csv": pd.DataFrame(split),
        "mimic-cxr-2.0.0-metadata.csv": pd.DataFrame(meta),
    }
    for name, table in tables.items():
        table.to_csv(root / (f"{name}.gz" if gz else name), index=False)
    return tables


PADCHEST_LABELS = (
    "['normal']", "['pleural effusion', 'cardiomegaly']", "['pseudonodule']", "['nodule', 'copd signs']",
    "['unchanged']", "['alveolar pattern', 'unchanged']", "['hiatal hernia', 'apical pleural thickening']",
    "['pericardial effusion']", "['subcutaneous emphysema', 'emphysema']", "",
)  # fmt: skip


def write_padchest_download(root: Path, patients: int = 40, size: int = 32) -> pd.DataFrame:
    """A PadChest folder: its CSV (real column names; Labels as list literals, one blank) and 16-bit PNGs in
    numbered folders; some patients have a lateral too. Returns the table."""
    rng = np.random.default_rng(5)
    rows = []
    for p in range(patients):
        for i, projection in enumerate(["PA" if p % 3 else "AP_horizontal"] + (["L"] if p % 5 == 0 else [])):
            image = f"2168401113669640{p:06d}{i}_00-0{p % 90:02d}-0{i}.png"
            folder = p % 3
            rows.append(
                {
                    "ImageID": image, "ImageDir": folder, "StudyDate_DICOM": 20140915, "StudyID": f"s{p}",
                    "PatientID": f"{839860488694292331637988235681460987 + p}", "PatientBirth": 1930.0 + p,
                    "PatientSex_DICOM": "F" if p % 2 else "M", "Projection": projection,
                    "Labels": PADCHEST_LABELS[(p + i) % len(PADCHEST_LABELS)],
                }
            )  # fmt: skip
            target = root / str(folder) / image
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 4096, (size, size), dtype=np.uint16) * 16).save(target)
    table = pd.DataFrame(rows)
    table.to_csv(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", index=False)
    return table
