"""Real rows of the NIH metadata table: the sample a dataset is made of, its patient split, and
the real finding boxes that signatures are placed at."""

from __future__ import annotations

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


def sample_nih_rows(count: int, seed: int, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """`count` rows of the NIH table drawn without replacement (seeded), kept in table order."""
    table = read_nih_table(TABLE_FILE) if table is None else table
    if not 0 < count <= len(table):
        raise UserError(f"cannot sample {count} rows from a table of {len(table)}")
    rng = np.random.default_rng([seed, 0x5A3])
    rows = np.sort(rng.choice(len(table), size=count, replace=False))
    return table.iloc[rows].reset_index(drop=True)


def split_test_patients(rows: pd.DataFrame, seed: int) -> tuple[list[str], list[str]]:
    """(train_val names, test names): a seeded TEST_PATIENT_FRACTION of the patients is test."""
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
