"""Reader of the NIH ChestX-ray14 on-disk layout (the real dataset and cxr14-synth share it).

    ROOT/images/<Image Index>            PNG files, any mode (L, RGBA, I;16, RGB, ...)
    ROOT/Data_Entry_2017_v2020.csv       or Data_Entry_2017.csv: one row per image
    ROOT/train_val_list.txt              image names, one a line
    ROOT/test_list.txt                   image names, one a line

The test split is the official list. Validation is carved out of train_val by patient.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory, Split
from mtlbench.errors import UserError
from mtlbench.tasks import TASK_NAMES

CSV_NAMES: tuple[str, ...] = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
IMAGES_DIR = "images"
NO_FINDING = "No Finding"
VIEWS: tuple[str, ...] = ("all", "PA", "AP")
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")

_REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")
_SEX_COLUMNS = ("Patient Sex", "Patient Gender")
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_LOAD_BATCH = 256


def read_nih_layout(
    root: Path, request: DataRequest, progress: ProgressFactory, name: str
) -> DatasetBundle:
    """Load the NIH layout under `root` into train/val/test splits held in memory.

    Validation takes `request.val_fraction` of the train_val patients (seeded by
    `request.data_seed`); `request.views` then keeps PA, AP or all images.
    """
    root = Path(root)
    _check_request(request)
    table, csv_path = read_data_entry(root)
    labels = parse_finding_labels(table["Finding Labels"], csv_path)
    train_val_names = read_image_list(root / TRAIN_VAL_LIST)
    test_names = read_image_list(root / TEST_LIST)
    row_of = _index_rows(table, csv_path)
    train_val_rows = _rows_for(train_val_names, row_of, root / TRAIN_VAL_LIST, csv_path)
    test_rows = _rows_for(test_names, row_of, root / TEST_LIST, csv_path)
    patients = table["Patient ID"].to_numpy()
    train_rows, val_rows = carve_validation(
        train_val_rows, patients, request.val_fraction, request.data_seed
    )
    split_rows = {"train": train_rows, "val": val_rows, "test": test_rows}
    views = table["View Position"].astype(str).to_numpy()
    split_rows = {k: _filter_views(rows, views, request.views, k) for k, rows in split_rows.items()}
    splits = _load_splits(root, table, labels, split_rows, request.image_size, progress, name)
    info = _describe(root, csv_path, splits, request)
    return DatasetBundle(name=name, train=splits["train"], val=splits["val"], test=splits["test"], info=info)


def read_data_entry(root: Path) -> tuple[pd.DataFrame, Path]:
    """The metadata table (first CSV of CSV_NAMES found) and its path; `Patient Sex` normalised."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist")
    csv_path = next((root / n for n in CSV_NAMES if (root / n).is_file()), None)
    if csv_path is None:
        raise UserError(f"no metadata CSV in {root}: expected {' or '.join(CSV_NAMES)}")
    try:
        table = pd.read_csv(csv_path, dtype={"Image Index": str, "Finding Labels": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"cannot parse {csv_path}: {err}") from err
    missing = [c for c in _REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"{csv_path} lacks column(s) {', '.join(map(repr, missing))}")
    if table["Finding Labels"].isna().any():
        raise UserError(f"{csv_path} has rows with an empty 'Finding Labels'")
    sex = next((c for c in _SEX_COLUMNS if c in table.columns), None)
    if sex is not None and sex != "Patient Sex":
        table = table.rename(columns={sex: "Patient Sex"})
    return table, csv_path


def parse_finding_labels(findings: Iterable[str], source: Path | str) -> np.ndarray:
    """`|`-joined NIH label strings → (N, 14) uint8 in TASK_NAMES order; `No Finding` is all zero."""
    column = {task: i for i, task in enumerate(TASK_NAMES)}
    strings = list(findings)
    labels = np.zeros((len(strings), len(TASK_NAMES)), dtype=np.uint8)
    for row, text in enumerate(strings):
        for label in str(text).split("|"):
            label = label.strip()
            if label == NO_FINDING:
                continue
            if label not in column:
                raise UserError(
                    f"unknown finding label {label!r} in {source} (row {row + 1}); "
                    f"known: {NO_FINDING}, {', '.join(TASK_NAMES)}"
                )
            labels[row, column[label]] = 1
    return labels


def read_image_list(path: Path) -> list[str]:
    """Image names in a split list file, one a line, blank lines skipped."""
    if not path.is_file():
        raise UserError(f"split list {path} does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def carve_validation(
    rows: np.ndarray, patients: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split `rows` into (train, val) by patient: a seeded `val_fraction` of the patients go to val."""
    unique = np.unique(patients[rows])
    if len(unique) < 2:
        raise UserError("train_val holds fewer than 2 patients: cannot carve a validation split")
    n_val = int(np.clip(round(val_fraction * len(unique)), 1, len(unique) - 1))
    rng = np.random.default_rng([seed, 0x7A1])
    val_patients = unique[rng.permutation(len(unique))[:n_val]]
    in_val = np.isin(patients[rows], val_patients)
    return rows[~in_val], rows[in_val]


def load_grayscale(path: Path, size: int) -> np.ndarray:
    """One image as (size, size) uint8 grayscale; 16-bit images are scaled, not clipped."""
    try:
        with Image.open(path) as img:
            gray = to_grayscale(img)
    except FileNotFoundError as err:
        raise UserError(f"image {path} does not exist") from err
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"cannot read image {path}: {err}") from err
    if gray.size != (size, size):
        shrinking = gray.width >= size and gray.height >= size
        resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
        gray = gray.resize((size, size), resample)
    return np.asarray(gray, dtype=np.uint8)


def to_grayscale(img: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit `L`; 16-bit values map 0..65535 → 0..255."""
    if img.mode == "L":
        return img.copy()
    if img.mode in _SIXTEEN_BIT_MODES:
        wide = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    return img.convert("L")


def _check_request(request: DataRequest) -> None:
    if request.views not in VIEWS:
        raise UserError(f"unknown views {request.views!r}; valid: {', '.join(VIEWS)}")
    if not 0.0 < request.val_fraction < 1.0:
        raise UserError(f"val_fraction must be between 0 and 1 (exclusive), got {request.val_fraction}")
    if request.image_size < 1:
        raise UserError(f"image_size must be positive, got {request.image_size}")


def _index_rows(table: pd.DataFrame, csv_path: Path) -> dict[str, int]:
    names = table["Image Index"].astype(str)
    duplicated = names[names.duplicated()]
    if len(duplicated):
        raise UserError(f"{csv_path} lists image {duplicated.iloc[0]!r} more than once")
    return {name: i for i, name in enumerate(names)}


def _rows_for(names: list[str], row_of: dict[str, int], list_path: Path, csv_path: Path) -> np.ndarray:
    missing = [n for n in names if n not in row_of]
    if missing:
        raise UserError(
            f"{len(missing)} image(s) in {list_path} are not in {csv_path}, e.g. {missing[0]!r}"
        )
    return np.array(sorted(row_of[n] for n in names), dtype=np.int64)


def _filter_views(rows: np.ndarray, views: np.ndarray, wanted: str, split: str) -> np.ndarray:
    if wanted == "all":
        return rows
    kept = rows[views[rows] == wanted]
    if len(kept) == 0:
        raise UserError(f"no {wanted} images left in the {split} split; try --views all")
    return kept


def _load_splits(
    root: Path,
    table: pd.DataFrame,
    labels: np.ndarray,
    split_rows: dict[str, np.ndarray],
    size: int,
    progress: ProgressFactory,
    name: str,
) -> dict[str, Split]:
    all_rows = np.concatenate([split_rows[k] for k in SPLIT_NAMES])
    names = np.array(table["Image Index"].astype(str).tolist())
    paths = [root / IMAGES_DIR / names[r] for r in all_rows]
    images = _load_images(paths, size, progress(f"loading {name} images", len(paths)))
    patients = table["Patient ID"].to_numpy()
    splits, start = {}, 0
    for key in SPLIT_NAMES:
        rows = split_rows[key]
        stop = start + len(rows)
        splits[key] = Split(
            images=images[start:stop],
            labels=labels[rows],
            image_ids=names[rows],
            patient_ids=patients[rows],
        )
        start = stop
    return splits


def _load_images(paths: list[Path], size: int, advance: Any) -> np.ndarray:
    images = np.empty((len(paths), size, size), dtype=np.uint8)
    # Pillow releases the GIL while decoding and resizing, so threads overlap file reads.
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        pending = 0
        for i, image in enumerate(pool.map(lambda p: load_grayscale(p, size), paths)):
            images[i] = image
            pending += 1
            if pending == _LOAD_BATCH:
                advance(pending)
                pending = 0
        if pending:
            advance(pending)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return images


def _describe(root: Path, csv_path: Path, splits: dict[str, Split], request: DataRequest) -> dict[str, Any]:
    return {
        "source": str(root.resolve()),
        "csv": csv_path.name,
        "images": {k: len(s) for k, s in splits.items()},
        "patients": {k: int(len(np.unique(s.patient_ids))) for k, s in splits.items()},
        "positives": {k: dict(zip(TASK_NAMES, s.labels.sum(axis=0).tolist())) for k, s in splits.items()},
        "val_fraction": request.val_fraction,
        "data_seed": request.data_seed,
        "views": request.views,
        "image_size": request.image_size,
        "fingerprint": fingerprint(splits),
    }


def fingerprint(splits: dict[str, Split]) -> str:
    """Short sha1 over each split's sorted image names and their label rows."""
    digest = hashlib.sha1()
    for key in SPLIT_NAMES:
        split = splits[key]
        order = np.argsort(split.image_ids.astype(str), kind="stable")
        digest.update(key.encode())
        digest.update("\n".join(split.image_ids.astype(str)[order]).encode())
        digest.update(np.ascontiguousarray(split.labels[order]).tobytes())
    return digest.hexdigest()[:16]
