"""padchest-synth: real PadChest rows (their Labels lists verbatim), written in PadChest's layout with
16-bit PNGs and read back by the padchest reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mtlbench.datasets import padchest_synth
from mtlbench.datasets.base import DataRequest, no_progress
from mtlbench.datasets.padchest import CSV_NAME
from mtlbench.registry import DATASETS


def test_rows_are_real_padchest_rows_and_read_back(tmp_path: Path) -> None:
    request = DataRequest(data_dir=tmp_path, image_size=24, synth_images=150, synth_test_images=50)
    bundle = padchest_synth.load_padchest_synth(request, no_progress)
    assert DATASETS.get("padchest-synth") is padchest_synth.load_padchest_synth
    root = padchest_synth.FOLDER.root(request)
    written = pd.read_csv(root / CSV_NAME, dtype={"ImageID": str, "PatientID": str, "Labels": str})
    source = padchest_synth.read_source_table().set_index("ImageID")
    real = source.loc[written["ImageID"]]
    assert written["Labels"].fillna("").tolist() == real["Labels"].fillna("").tolist()
    assert written["PatientID"].tolist() == real["PatientID"].tolist()
    assert written["Projection"].isin(padchest_synth.FRONTAL).all()
    assert sum(len(s) for s in bundle.splits().values()) == 200
    assert bundle.info["generator"]["generator"] == "padchest-synth"
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(next(root.glob("*/*.png"))))
    assert image.dtype.itemsize == 2  # 16-bit PNGs, as PadChest's
    again = padchest_synth.load_padchest_synth(request, no_progress)  # reused, not regenerated
    assert again.info["fingerprint"] == bundle.info["fingerprint"]
