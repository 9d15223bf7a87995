"""The NIH ChestX-ray14 metadata tables that ship in torchxrayvision's `data/` folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from mtlbench.errors import UserError

TABLE_FILE = "Data_Entry_2017_v2020.csv.gz"
BBOX_FILE = "BBox_List_2017.csv.gz"
TABLE_ROWS = 112_120


def nih_data_file(name: str) -> Path:
    """A file of torchxrayvision's data folder (found without importing torchxrayvision)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the NIH metadata table needs torchxrayvision installed (pip install torchxrayvision)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        raise UserError(f"torchxrayvision's data folder lacks {name}: {path} is missing")
    return path


def read_nih_table(name: str = TABLE_FILE) -> pd.DataFrame:
    """The full NIH metadata table (112,120 rows, real column names)."""
    return pd.read_csv(nih_data_file(name), dtype={"Image Index": str, "Finding Labels": str})
