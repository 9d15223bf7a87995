"""The PadChest reader: label lists mapped to the 14 tasks (whole findings, torchxrayvision's synonyms),
no stated finding → missing, splits carved by patient, 16-bit PNGs, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtlbench.datasets.base import DataRequest, no_progress
from mtlbench.datasets.padchest import CSV_NAME, parse_labels, read_padchest
from mtlbench.errors import UserError
from mtlbench.tasks import TASK_NAMES
from tests.dataset_fixtures import write_padchest_download


def load(root: Path, tmp_path: Path, **kw):
    request = DataRequest(data_dir=root, image_size=16, cache_dir=tmp_path / "cache", **kw)
    return read_padchest(root, request, no_progress)


@pytest.fixture
def download(tmp_path: Path):
    root = tmp_path / "padchest"
    root.mkdir()
    return root, write_padchest_download(root)


def positive(bundle, labels: str, tmp_table: pd.DataFrame) -> dict[str, float]:
    """The task labels the reader gave the first image whose Labels cell is `labels`."""
    row = tmp_table[tmp_table["Labels"].fillna("") == labels].iloc[0]
    image = f"{row['ImageDir']}/{row['ImageID']}"
    for split in bundle.splits().values():
        if image in split.image_ids:
            values = split.labels[list(split.image_ids).index(image)]
            return dict(zip(TASK_NAMES, values.tolist()))
    raise AssertionError(image)


def test_findings_map_to_tasks_by_whole_label(download, tmp_path: Path) -> None:
    root, table = download
    bundle = load(root, tmp_path)
    both = positive(bundle, "['pleural effusion', 'cardiomegaly']", table)
    assert both["Effusion"] == 1 and both["Cardiomegaly"] == 1 and both["Mass"] == 0
    assert positive(bundle, "['pseudonodule']", table)["Nodule"] == 0  # not a nodule (a substring match says 1)
    assert positive(bundle, "['nodule', 'copd signs']", table)["Nodule"] == 1
    assert positive(bundle, "['pericardial effusion']", table)["Effusion"] == 0
    emphysema = positive(bundle, "['subcutaneous emphysema', 'emphysema']", table)
    assert emphysema["Emphysema"] == 1
    hernia = positive(bundle, "['hiatal hernia', 'apical pleural thickening']", table)
    assert hernia["Hernia"] == 1 and hernia["Pleural_Thickening"] == 1
    assert positive(bundle, "['alveolar pattern', 'unchanged']", table)["Infiltration"] == 1
    for unstated in ("['unchanged']", ""):
        assert all(np.isnan(v) for v in positive(bundle, unstated, table).values())
    normal = positive(bundle, "['normal']", table)
    assert all(v == 0 for v in normal.values())


def test_splits_by_patient_views_and_16_bit_images(download, tmp_path: Path) -> None:
    root, table = download
    bundle = load(root, tmp_path)
    patients = [set(s.patient_ids) for s in bundle.splits().values()]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert len(patients[2]) == round(0.2 * 40)
    frontal = load(root, tmp_path, views="frontal")
    total = lambda b: sum(len(s) for s in b.splits().values())  # noqa: E731
    assert total(bundle) - total(frontal) == int((table["Projection"] == "L").sum()) > 0
    pixels = bundle.train.take(slice(0, 4))
    assert pixels.dtype == np.uint8 and pixels.std() > 10  # 12-bit content in 16-bit PNGs, scaled to 8 bits


def test_parse_labels() -> None:
    assert parse_labels("['Normal ', 'copd signs']", "x") == ["normal", "copd signs"]
    assert parse_labels(float("nan"), "x") is None and parse_labels("  ", "x") is None
    for bad in ("['unclosed'", "normal", "[1, 2]", "__import__('os')"):
        with pytest.raises(UserError, match="is not a list of findings"):
            parse_labels(bad, "file line 3")


@pytest.mark.parametrize(
    "fault, message",
    [("labels", "line 5: Labels"), ("column", "lacks column(s) 'Labels'"), ("folder", "ImageDir 'x' is not a folder")],
)
def test_bad_tables_are_one_line_errors(download, tmp_path: Path, fault: str, message: str) -> None:
    root, table = download
    table = table.astype({"ImageDir": object})
    if fault == "labels":
        table.loc[3, "Labels"] = "['cardiomegaly'"
    elif fault == "column":
        table = table.drop(columns=["Labels"])
    else:
        table.loc[0, "ImageDir"] = "x"
    table.to_csv(root / CSV_NAME, index=False)
    with pytest.raises(UserError) as err:
        load(root, tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)
