"""`mtlbench run --methods all` on CheXpert, MIMIC-CXR-JPG and PadChest fixtures in their download layouts
(CI runs chexpert-synth and cxr14-synth --synth-missing through the CLI itself)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from mtlbench.cli import main
from mtlbench.plan import method_sets
from tests.dataset_fixtures import write_chexpert_download, write_mimic_download, write_padchest_download

pytestmark = pytest.mark.slow  # 29 runs a dataset

TINY = ["--preset", "smoke", "--epochs", "1", "--batch-size", "32", "--image-size", "16", "--quiet"]


WRITERS = {"chexpert": write_chexpert_download, "mimic-cxr": write_mimic_download, "padchest": write_padchest_download}


@pytest.mark.parametrize("dataset", list(WRITERS))
def test_every_method_completes_on_the_download_layout(tmp_path, dataset: str) -> None:
    root = tmp_path / dataset
    root.mkdir()
    WRITERS[dataset](root)
    results = tmp_path / "r.sqlite"
    argv = ["run", "--methods", "all", "--dataset", dataset, "--data-dir", str(root), "--results", str(results)]
    assert main([*argv, *TINY]) == 0
    con = sqlite3.connect(results)
    rows = con.execute("SELECT method, status, data_json FROM runs").fetchall()
    assert {m for m, status, _ in rows if status == "complete"} == set(method_sets()["all"])
    data = json.loads(rows[0][2])
    assert sum(data["labelled"]["test"].values()) < 14 * data["images"]["test"]  # labels are missing there
    diagnostics = dict(con.execute("SELECT name, SUM(value) FROM diagnostics GROUP BY name").fetchall())
    assert "unlabelled_task_steps" in diagnostics  # counted on data with missing labels (0 when every batch had some)
    if dataset != "padchest":  # seven tasks CheXpert's labeler does not give: never a labelled image
        assert diagnostics["unlabelled_task_steps"] >= 7 * len(rows)
