"""Real rows of the NIH metadata table: the sample a dataset is made of, its patient split, and
the real finding boxes that signatures are placed at.

A dataset's train/val and test images come from two fixed, seeded shares of the NIH patients
(`patient_pools`): TEST_PATIENT_FRACTION of the patients for test, the rest for train/val. Which
patient lands where does not depend on labels, so each share holds the table's natural prevalence
up to chance, and each split is a uniform draw of images from its share (`sample_split`). So the
test split has its own size, never shares a patient with train/val, and neither split depends on
the other's size; a smaller split is a subset of a larger one with the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np
import pandas as pd

from mtlbench.datasets.cxr14_synth.params import TEST_PATIENT_FRACTION
from mtlbench.datasets.nih_tables import BBOX_FILE, TABLE_FILE, nih_data_file, read_nih_table
from mtlbench.errors import UserError
from mtlbench.tasks import TASK_NAMES

BBOX_TASK_NAMES: Mapping[str, str] = MappingProxyType({"Infiltrate": "Infiltration"})
"""BBox_List_2017 label → task name, where they differ."""


# Streams of the seeded draws (numpy seed sequences [seed, stream]).
_POOL_STREAM, _TRAIN_VAL_STREAM, _TEST_STREAM = 0x7E5, 0x5A3, 0x7E7


@dataclass(frozen=True)
class SynthSample:
    """The NIH rows a cxr14-synth dataset is made of (train/val and test, in table order) and the
    image names of each split, in table order."""

    rows: pd.DataFrame
    train_val: list[str]
    test: list[str]


def patient_pools(table: pd.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train/val pool, test pool): row numbers of `table`, ascending. A seeded
    TEST_PATIENT_FRACTION of the table's patients forms the test pool, whatever their labels."""
    patient = table["Patient ID"].to_numpy()
    patients = np.unique(patient)
    n_test = int(round(TEST_PATIENT_FRACTION * len(patients)))
    rng = np.random.default_rng([seed, _POOL_STREAM])
    in_test = np.isin(patient, patients[rng.permutation(len(patients))[:n_test]])
    return np.flatnonzero(~in_test), np.flatnonzero(in_test)


def sample_split(count: int, test_count: int, seed: int, table: pd.DataFrame | None = None) -> SynthSample:
    """`count` train/val and `test_count` test images: each a seeded uniform draw (without
    replacement) of the rows of its patient pool (see `patient_pools`).

    Each draw takes the first rows of a seeded permutation of its pool, so the train/val rows
    depend only on (count, seed), the test rows only on (test_count, seed), and a smaller draw is
    a subset of a larger one. A split larger than its pool is a UserError naming the limit.
    """
    table = read_nih_table(TABLE_FILE) if table is None else table
    train_val_pool, test_pool = patient_pools(table, seed)
    share = f"{100 * TEST_PATIENT_FRACTION:g}%"
    limits = (
        (
            "--synth-images",
            count,
            train_val_pool,
            f"train/val images are drawn from the NIH table's patients outside the {share} kept for test",
        ),
        (
            "--synth-test-images",
            test_count,
            test_pool,
            f"test images are drawn from a seeded {share} of the NIH table's patients",
        ),
    )
    for flag, n, pool, where in limits:
        if not 0 < n <= len(pool):
            raise UserError(
                f"{flag} must be at most {len(pool):,} with --data-seed {seed}, got {n:,} "
                f"({where}, who have {len(pool):,} images)"
            )
    train_val = _first_of_permutation(train_val_pool, count, [seed, _TRAIN_VAL_STREAM])
    test = _first_of_permutation(test_pool, test_count, [seed, _TEST_STREAM])
    names = table["Image Index"].astype(str).to_numpy()
    rows = table.iloc[np.sort(np.concatenate([train_val, test]))].reset_index(drop=True)
    return SynthSample(rows, names[train_val].tolist(), names[test].tolist())


def _first_of_permutation(pool: np.ndarray, n: int, seed: list[int]) -> np.ndarray:
    """The first `n` of a seeded permutation of `pool`, ascending."""
    return np.sort(pool[np.random.default_rng(seed).permutation(len(pool))[:n]])


def sample_nih_rows(count: int, seed: int, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """`count` rows of the NIH table drawn without replacement (seeded), kept in table order
    (test fixtures and benchmarks draw NIH-like downloads with it; cxr14-synth uses `sample_split`)."""
    table = read_nih_table(TABLE_FILE) if table is None else table
    if not 0 < count <= len(table):
        raise UserError(f"cannot sample {count} rows from a table of {len(table)}")
    rng = np.random.default_rng([seed, 0x5A3])
    rows = np.sort(rng.choice(len(table), size=count, replace=False))
    return table.iloc[rows].reset_index(drop=True)


def split_test_patients(rows: pd.DataFrame, seed: int) -> tuple[list[str], list[str]]:
    """(train_val names, test names) of `rows`: a seeded TEST_PATIENT_FRACTION of their patients is
    test (the split of the NIH-like downloads that test fixtures and benchmarks write)."""
    patients = np.unique(rows["Patient ID"].to_numpy())
    n_test = int(np.clip(round(TEST_PATIENT_FRACTION * len(patients)), 1, len(patients) - 1))
    rng = np.random.default_rng([seed, 0x7E5])
    test_patients = patients[rng.permutation(len(patients))[:n_test]]
    in_test = np.isin(rows["Patient ID"].to_numpy(), test_patients)
    names = rows["Image Index"].astype(str).to_numpy()
    return names[~in_test].tolist(), names[in_test].tolist()


def read_nih_boxes() -> dict[str, np.ndarray]:
    """Real finding boxes per task name: (k, 4) arrays of centre x, centre y, w, h in image widths."""
    raw = pd.read_csv(nih_data_file(BBOX_FILE)).iloc[:, :6]
    raw.columns = ["image", "label", "x", "y", "w", "h"]
    xywh = raw[["x", "y", "w", "h"]].to_numpy(dtype=np.float64) / 1024.0
    centred = np.column_stack([xywh[:, 0] + xywh[:, 2] / 2, xywh[:, 1] + xywh[:, 3] / 2, xywh[:, 2:]])
    tasks = raw["label"].map(lambda label: BBOX_TASK_NAMES.get(label, label)).to_numpy()
    return {task: centred[tasks == task] for task in TASK_NAMES if (tasks == task).any()}
