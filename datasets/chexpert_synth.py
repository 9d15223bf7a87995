"""chexpert-synth: an offline stand-in for CheXpert with its real label table, rendered like cxr14-synth.

Rows are real rows of CheXpert's training table as torchxrayvision ships it (chexpert_train.csv.gz,
223,414 rows): patients, ages, sexes, AP/PA views and the 14 observations with their uncertain (−1)
and blank values exactly as in the table. Frontal rows only (the renderer draws frontal chests).
Train, valid and test images come from three seeded, label-blind shares of the patients. The files
are written in CheXpert's own layout (train.csv, valid.csv, test.csv and JPEGs under
train/valid/test/patientNNNNN/studyN/) and read back by the `chexpert` reader, so `--uncertain`,
the masked losses and the reader itself run with no download.

Images are cxr14-synth's renderer (datasets/cxr14_synth) on these rows. A signature is drawn for each
of the seven NIH tasks CheXpert labels where the row is positive, and where it is uncertain with
probability UNCERTAIN_RENDER_RATE (an uncertain finding is sometimes there); then cxr14-synth's label
noise (a positive's signature left out 5% of the time, spurious ones at 5% × prevalence).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory
from mtlbench.datasets.chexpert import OBSERVATIONS, TEST_CSV, TRAIN_CSV, VALID_CSV, read_chexpert, task_labels
from mtlbench.datasets.cxr14_synth.noise import render_labels
from mtlbench.datasets.cxr14_synth.rng import Draws, image_keys
from mtlbench.datasets.cxr14_synth.writer import SYNTH_JSON
from mtlbench.datasets.synth_folder import SynthFolder, look, render_into, synth_params
from mtlbench.errors import UserError
from mtlbench.registry import register_dataset
from mtlbench.tasks import TASK_NAMES

DATASET_NAME = "chexpert-synth"
GENERATOR_VERSION = 2  # 2: cxr14-synth's renderer of its version 5 (latent severity, new strengths)
TABLE_FILE = "chexpert_train.csv.gz"
TEST_PATIENT_FRACTION, VALID_PATIENT_FRACTION = 0.2, 0.1  # of the table's patients with frontal images
VALID_SHARE = 0.1  # of --synth-images: the valid.csv images, the rest train.csv
UNCERTAIN_RENDER_RATE = 0.5
JPEG_QUALITY = 95
_POOL_STREAM, _DRAW_STREAM = 0xC5E7, 0xC5D7
_SPLIT_FILES = {"train": TRAIN_CSV, "valid": VALID_CSV, "test": TEST_CSV}


def read_source_table() -> pd.DataFrame:
    """torchxrayvision's copy of CheXpert's training table, frontal rows only, with a patient column."""
    import torchxrayvision  # the table ships in its data folder

    path = Path(torchxrayvision.__file__).parent / "data" / TABLE_FILE
    try:
        table = pd.read_csv(path)
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror or err}); reinstall torchxrayvision") from None
    table = table[table["Frontal/Lateral"] == "Frontal"].reset_index(drop=True)
    table["patient"] = table["Path"].str.extract(r"patient(\d+)", expand=False).astype(np.int64)
    return table


def sample_rows(table: pd.DataFrame, count: int, test_count: int, seed: int) -> dict[str, pd.DataFrame]:
    """{"train", "valid", "test"}: seeded draws of rows, each from its own share of the patients."""
    patients = np.unique(table["patient"].to_numpy())
    order = np.random.default_rng([seed, _POOL_STREAM]).permutation(len(patients))
    n_test, n_valid = round(TEST_PATIENT_FRACTION * len(patients)), round(VALID_PATIENT_FRACTION * len(patients))
    pools = {
        "test": patients[order[:n_test]],
        "valid": patients[order[n_test : n_test + n_valid]],
        "train": patients[order[n_test + n_valid :]],
    }
    n_valid_images = max(1, round(VALID_SHARE * count))
    wanted = {"train": count - n_valid_images, "valid": n_valid_images, "test": test_count}
    out = {}
    for split, pool in pools.items():
        rows = np.flatnonzero(np.isin(table["patient"].to_numpy(), pool))
        if wanted[split] > len(rows):
            flag = "--synth-test-images" if split == "test" else "--synth-images"
            raise UserError(f"{flag} asks for {wanted[split]:,} {split} images; this table's share has {len(rows):,}")
        rng = np.random.default_rng([seed, _DRAW_STREAM, len(out)])
        picked = np.sort(rows[rng.permutation(len(rows))[: wanted[split]]])
        out[split] = table.iloc[picked].reset_index(drop=True)
    return out


def render_frame(rows: pd.DataFrame, split: str) -> pd.DataFrame:
    """The columns cxr14-synth's renderer reads, for CheXpert rows written under `split`/."""
    return pd.DataFrame(
        {
            "Image Index": [_relative(p, split) for p in rows["Path"]],
            "Patient ID": rows["patient"].to_numpy(),
            "Patient Age": rows["Age"].to_numpy(dtype=np.float64),
            "Patient Sex": rows["Sex"].astype(str).str[:1].to_numpy(),
            "View Position": rows["AP/PA"].fillna("AP").astype(str).to_numpy(),
        }
    )


def rendered_findings(rows: pd.DataFrame, names: pd.Series, seed: int, prevalence: np.ndarray) -> np.ndarray:
    """(N, 14) bool: the findings drawn on each image (see the module docstring)."""
    certain = task_labels(rows, "zeros")  # positives only: 1 where the table says 1 (or No Finding makes it 0)
    uncertain = task_labels(rows, "ones") - np.nan_to_num(certain)  # 1 where the table says −1
    draws = Draws(seed, image_keys(names))
    present = np.nan_to_num(certain) == 1
    for t, task in enumerate(TASK_NAMES):
        present[:, t] |= (np.nan_to_num(uncertain[:, t]) == 1) & draws.chance(
            f"uncertain.{task}", UNCERTAIN_RENDER_RATE
        )
    return render_labels(present.astype(np.uint8), names, seed, prevalence)


def write_layout(
    target: Path,
    samples: dict[str, pd.DataFrame],
    size: int,
    seed: int,
    progress: ProgressFactory,
    params: dict[str, Any],
    prevalence: np.ndarray,
) -> None:
    """CheXpert's layout of `samples` in `target`: the three tables and their JPEGs."""
    total = sum(len(r) for r in samples.values())
    advance = progress(f"generating {DATASET_NAME}", total)
    style = look(size, seed)
    stats: dict[str, Any] = {}
    for split, rows in samples.items():
        frame = render_frame(rows, split)
        drawn = rendered_findings(rows, frame["Image Index"], seed, prevalence)
        names = frame["Image Index"].tolist()
        render_into(target, frame, drawn, style, _write_jpeg, advance)
        table = rows[["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS]].copy()
        table["Path"] = [f"{DATASET_NAME}/{n}" for n in names]
        table.to_csv(target / _SPLIT_FILES[split], index=False)
        stats[split] = {
            "images": len(rows),
            "patients": int(rows["patient"].nunique()),
            "drawn": dict(zip(TASK_NAMES, drawn.sum(axis=0).tolist())),
        }
    (target / SYNTH_JSON).write_text(json.dumps({**params, "stats": stats}, indent=2) + "\n")


FOLDER = SynthFolder(DATASET_NAME, frozenset({*_SPLIT_FILES.values(), *_SPLIT_FILES}))


@register_dataset(DATASET_NAME)
def load_chexpert_synth(request: DataRequest, progress: ProgressFactory) -> DatasetBundle:
    """Generate (once, cached under data_dir) and load the synthetic CheXpert-layout dataset."""
    FOLDER.check_request(request)
    root = FOLDER.root(request)
    params = synth_params(
        DATASET_NAME, GENERATOR_VERSION, request, TABLE_FILE, uncertain_render_rate=UNCERTAIN_RENDER_RATE
    )

    def write(target: Path) -> None:
        table = read_source_table()
        samples = sample_rows(table, request.synth_images, request.synth_test_images, request.data_seed)
        prevalence = (task_labels(table, "zeros") == 1).mean(axis=0)  # of the positives, per task
        write_layout(target, samples, request.image_size, request.data_seed, progress, params, prevalence)

    FOLDER.ensure(root, params, request.build_cache, write)
    bundle = read_chexpert(root, request, progress, name=DATASET_NAME)
    return dataclasses.replace(bundle, info={**bundle.info, "generator": FOLDER.generator_info(root)})


def dataset_root(request: DataRequest) -> Path:
    """data_dir/chexpert-synth/n{count}-test{test_count}-px{size}-seed{seed}."""
    return FOLDER.root(request)


def _relative(path: str, split: str) -> str:
    """CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg → {split}/patient00001/study1/…"""
    parts = Path(path).parts
    return Path(split, *parts[2:]).as_posix()


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    Image.fromarray(image, mode="L").save(path, format="JPEG", quality=JPEG_QUALITY)
