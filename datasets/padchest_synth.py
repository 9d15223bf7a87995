"""padchest-synth: an offline stand-in for PadChest with its real label table, rendered like cxr14-synth.

Rows are real rows of the PadChest table as torchxrayvision ships it
(PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz, 160,861 rows): patients, sexes, birth years,
projections and the Labels lists verbatim (so "unchanged"-only and blank rows keep their missing labels).
Frontal rows only (PA, AP, AP_horizontal: the renderer draws frontal chests). `--synth-images` plus
`--synth-test-images` images are drawn; PadChest has no official split, so the `padchest` reader that
reads the folder back carves test (20%) and validation (`--val-fraction`) by patient, and the split
sizes are those fractions of the patients. Written in PadChest's layout: the CSV and 16-bit PNGs in
numbered folders. Findings are drawn where the row's labels make a task positive (datasets/padchest.py),
then cxr14-synth's label noise.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory
from mtlbench.datasets.cxr14_synth.noise import render_labels
from mtlbench.datasets.cxr14_synth.rng import image_keys
from mtlbench.datasets.cxr14_synth.writer import SYNTH_JSON
from mtlbench.datasets.padchest import CSV_NAME, read_padchest, task_labels
from mtlbench.datasets.synth_folder import SynthFolder, look, render_into, synth_params
from mtlbench.errors import UserError
from mtlbench.registry import register_dataset
from mtlbench.tasks import TASK_NAMES

DATASET_NAME = "padchest-synth"
GENERATOR_VERSION = 2  # 2: cxr14-synth's renderer of its version 5 (latent severity, new strengths)
FRONTAL = ("PA", "AP", "AP_horizontal")
_DRAW_STREAM = 0x9AD7
FOLDER = SynthFolder(DATASET_NAME, frozenset({CSV_NAME, *(str(k) for k in range(55))}))


def read_source_table() -> pd.DataFrame:
    """torchxrayvision's copy of the PadChest table: frontal rows with a Labels cell."""
    import torchxrayvision  # the table ships in its data folder

    path = Path(torchxrayvision.__file__).parent / "data" / f"{CSV_NAME}.gz"
    try:
        table = pd.read_csv(path, dtype={"ImageID": str, "PatientID": str, "Labels": str}, low_memory=False)
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror or err}); reinstall torchxrayvision") from None
    keep = table["Projection"].isin(FRONTAL) & table["Labels"].notna()
    return table[keep].drop(columns=["Unnamed: 0"], errors="ignore").reset_index(drop=True)


def sample_rows(table: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    """`count` rows drawn without replacement (seeded), in table order."""
    if not 0 < count <= len(table):
        raise UserError(f"--synth-images + --synth-test-images must be at most {len(table):,} for {DATASET_NAME}")
    picked = np.sort(np.random.default_rng([seed, _DRAW_STREAM]).permutation(len(table))[:count])
    return table.iloc[picked].reset_index(drop=True)


def render_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """The columns cxr14-synth's renderer reads; a patient's number is a hash of its PadChest ID."""
    year = pd.to_numeric(rows["StudyDate_DICOM"].astype(str).str[:4], errors="coerce")
    age = (year - pd.to_numeric(rows["PatientBirth"], errors="coerce")).fillna(60).clip(0, 100)
    return pd.DataFrame(
        {
            "Image Index": [f"{int(d)}/{i}" for d, i in zip(rows["ImageDir"], rows["ImageID"])],
            "Patient ID": image_keys(rows["PatientID"]) >> np.uint64(12),  # below 2^52: exact in any numeric column
            "Patient Age": age.to_numpy(dtype=np.float64),
            "Patient Sex": rows["PatientSex_DICOM"].fillna("M").astype(str).to_numpy(),
            "View Position": np.where(rows["Projection"] == "PA", "PA", "AP"),
        }
    )


def write_layout(
    target: Path,
    rows: pd.DataFrame,
    size: int,
    seed: int,
    params: dict,
    prevalence: np.ndarray,
    progress: ProgressFactory,
) -> None:
    """PadChest's layout of `rows` in `target`: the table and 16-bit PNGs in numbered folders."""
    frame = render_frame(rows)
    stated = task_labels(rows["Labels"], Path(CSV_NAME))
    drawn = render_labels(np.nan_to_num(stated).astype(np.uint8), frame["Image Index"], seed, prevalence)
    render_into(target, frame, drawn, look(size, seed), _write_png16, progress(f"generating {DATASET_NAME}", len(rows)))
    rows.to_csv(target / CSV_NAME, index=False)
    stats = {
        "images": len(rows),
        "patients": int(rows["PatientID"].nunique()),
        "drawn": dict(zip(TASK_NAMES, drawn.sum(axis=0).tolist())),
    }
    (target / SYNTH_JSON).write_text(json.dumps({**params, "stats": stats}, indent=2) + "\n")


@register_dataset(DATASET_NAME)
def load_padchest_synth(request: DataRequest, progress: ProgressFactory) -> DatasetBundle:
    """Generate (once, cached under data_dir) and load the synthetic PadChest-layout dataset."""
    FOLDER.check_request(request)
    root = FOLDER.root(request)
    count = request.synth_images + request.synth_test_images
    params = synth_params(DATASET_NAME, GENERATOR_VERSION, request, f"{CSV_NAME}.gz")

    def write(target: Path) -> None:
        table = read_source_table()
        prevalence = np.nan_to_num(task_labels(table["Labels"], Path(CSV_NAME))).mean(axis=0)
        rows = sample_rows(table, count, request.data_seed)
        write_layout(target, rows, request.image_size, request.data_seed, params, prevalence, progress)

    FOLDER.ensure(root, params, request.build_cache, write)
    bundle = read_padchest(root, request, progress, name=DATASET_NAME)
    return dataclasses.replace(bundle, info={**bundle.info, "generator": FOLDER.generator_info(root)})


def _write_png16(path: Path, image: np.ndarray) -> None:
    """A 16-bit grayscale PNG spanning the full range, as PadChest's are stored."""
    Image.fromarray(image.astype(np.uint16) * 257).save(path, format="PNG")
