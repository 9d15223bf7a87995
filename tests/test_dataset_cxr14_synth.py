"""cxr14-synth: real NIH labels, seeded rendering, patient splits, and safe caching on disk."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mtlbench.datasets.base import DataRequest, no_progress
from mtlbench.datasets.cxr14_synth import loader, nih_sample, noise, params, render, writer
from mtlbench.datasets.nih_layout import parse_finding_labels, read_image_list
from mtlbench.datasets.nih_tables import read_nih_table
from mtlbench.errors import UserError
from mtlbench.registry import DATASETS
from mtlbench.tasks import TASK_NAMES

COUNT, SIZE = 200, 32
NEVER_A_PID = 2**22 + 1  # above the largest pid_max Linux allows


def request(data_dir: Path, seed: int = 0, **kw) -> DataRequest:
    return DataRequest(data_dir=data_dir, image_size=SIZE, synth_images=COUNT, data_seed=seed, **kw)


def generate(data_dir: Path, seed: int = 0) -> Path:
    root = loader.dataset_root(request(data_dir, seed))
    return writer.ensure_generated(root, COUNT, SIZE, seed, no_progress)


@pytest.fixture(scope="module")
def nih_table():
    return read_nih_table()


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth"))


def test_registered() -> None:
    assert DATASETS.get("cxr14-synth") is loader.load_cxr14_synth


def test_sampled_label_prevalence_matches_nih_table(nih_table) -> None:
    full = parse_finding_labels(nih_table["Finding Labels"], "table").mean(axis=0)
    rows = nih_sample.sample_nih_rows(3000, 7, nih_table)
    sample = parse_finding_labels(rows["Finding Labels"], "sample").mean(axis=0)
    tolerance = np.maximum(4 * np.sqrt(full * (1 - full) / 3000), 0.004)
    assert np.all(np.abs(sample - full) <= tolerance), dict(zip(TASK_NAMES, sample - full))
    assert 0.15 < sample[TASK_NAMES.index("Infiltration")] < 0.21


def test_csv_keeps_real_rows_exactly(generated: Path, nih_table) -> None:
    import pandas as pd

    written = pd.read_csv(generated / "Data_Entry_2017_v2020.csv", dtype={"Image Index": str, "Finding Labels": str})
    assert list(written.columns) == list(nih_table.columns) and len(written) == COUNT
    real = nih_table.set_index("Image Index").loc[written["Image Index"]]
    assert (real["Finding Labels"].to_numpy() == written["Finding Labels"].to_numpy()).all()
    assert (real["Patient ID"].to_numpy() == written["Patient ID"].to_numpy()).all()
    assert sorted(p.name for p in (generated / "images").iterdir()) == sorted(written["Image Index"])


def test_same_seed_gives_identical_files_other_seed_differs(generated: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again")
    for name in ["Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt", "synth.json"]:
        assert (generated / name).read_bytes() == (again / name).read_bytes(), name
    names = sorted(p.name for p in (generated / "images").iterdir())
    for name in names:
        assert (generated / "images" / name).read_bytes() == (again / "images" / name).read_bytes(), name
    other = generate(tmp_path / "other", seed=1)
    assert sorted(p.name for p in (other / "images").iterdir()) != names


def test_rendering_does_not_depend_on_chunking(nih_table) -> None:
    rows = nih_sample.sample_nih_rows(6, 3, nih_table)
    rendered = parse_finding_labels(rows["Finding Labels"], "t").astype(bool)
    together = render.render_images(rows, rendered, SIZE, 5)
    one_by_one = [render.render_images(rows.iloc[[i]], rendered[[i]], SIZE, 5)[0] for i in range(6)]
    assert np.array_equal(together, np.stack(one_by_one))


def test_rendering_is_deterministic_and_independent_of_blocks_chunks_and_prefix(nih_table, monkeypatch) -> None:
    rows = nih_sample.sample_nih_rows(400, 11, nih_table).iloc[:23]
    rendered = parse_finding_labels(rows["Finding Labels"], "t").astype(bool)
    rendered[::3, TASK_NAMES.index("Nodule")] = True  # some lesions in every block
    rendered[1::4, TASK_NAMES.index("Effusion")] = True
    boxes = nih_sample.read_nih_boxes()
    first = render.render_images(rows, rendered, SIZE, 4, boxes=boxes)
    assert np.array_equal(first, render.render_images(rows, rendered, SIZE, 4, boxes=boxes))
    # Many threads, chunks of 7 images, blocks of 3: the same bytes.
    monkeypatch.setattr(render, "_PIXEL_BUDGET", 7 * SIZE * SIZE)
    monkeypatch.setattr(render, "_BLOCK_PIXELS", 3 * SIZE * SIZE)
    assert np.array_equal(first, render.render_images(rows, rendered, SIZE, 4, boxes=boxes))
    prefix = render.render_images(rows.iloc[:10], rendered[:10], SIZE, 4, boxes=boxes)
    assert np.array_equal(first[:10], prefix)


def test_test_split_is_by_patient_and_about_a_fifth(generated: Path) -> None:
    import pandas as pd

    table = pd.read_csv(generated / "Data_Entry_2017_v2020.csv").set_index("Image Index")
    train_val = set(table.loc[read_image_list(generated / "train_val_list.txt"), "Patient ID"])
    test = set(table.loc[read_image_list(generated / "test_list.txt"), "Patient ID"])
    assert not train_val & test
    assert abs(len(test) / (len(test) + len(train_val)) - params.TEST_PATIENT_FRACTION) < 0.01


def test_loader_returns_disjoint_patient_splits(tmp_path: Path) -> None:
    bundle = loader.load_cxr14_synth(request(tmp_path, seed=2), no_progress)
    patients = [set(s.patient_ids) for s in (bundle.train, bundle.val, bundle.test)]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == COUNT
    assert bundle.train.image_shape == (SIZE, SIZE) and bundle.train.take(slice(None)).dtype == np.uint8
    generator = bundle.info["generator"]
    assert generator["seed"] == 2 and generator["strength"] == dict(params.FINDING_STRENGTH)
    assert bundle.name == "cxr14-synth"


def test_complete_dataset_is_reused(tmp_path: Path) -> None:
    calls: list[str] = []

    def progress(description: str, total: int):
        calls.append(description)
        return lambda n=1: None

    loader.load_cxr14_synth(request(tmp_path), progress)
    loader.load_cxr14_synth(request(tmp_path), progress)
    assert [c for c in calls if c.startswith("generating")] == ["generating cxr14-synth"]


def test_interrupted_generation_is_not_trusted(tmp_path: Path) -> None:
    root = loader.dataset_root(request(tmp_path))
    partial = root.with_name(f"{root.name}.partial-{NEVER_A_PID}")
    (partial / "images").mkdir(parents=True)
    (partial / writer.PARTIAL_MARKER).write_text("written first by a generator that was then killed\n")
    (partial / "Data_Entry_2017_v2020.csv").write_text("junk\n")
    (root / "images").mkdir(parents=True)  # a final folder without its completion marker
    (root / "synth.json").write_text(json.dumps(params.generator_params(COUNT, SIZE, 0)))
    bundle = loader.load_cxr14_synth(request(tmp_path), no_progress)
    assert not partial.exists()
    assert (root / writer.COMPLETE_MARKER).is_file()
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == COUNT
    assert [p.name for p in root.parent.iterdir()] == [root.name]


def test_changed_generator_parameters_regenerate(tmp_path: Path) -> None:
    root = generate(tmp_path)
    stored = json.loads((root / "synth.json").read_text())
    (root / "synth.json").write_text(json.dumps({**stored, "version": -1}))
    generate(tmp_path)
    assert json.loads((root / "synth.json").read_text())["version"] == params.GENERATOR_VERSION


@pytest.mark.parametrize("task", TASK_NAMES)
def test_each_finding_changes_the_image(nih_table, task: str) -> None:
    rows = nih_sample.sample_nih_rows(400, 0, nih_table)
    healthy = np.flatnonzero(parse_finding_labels(rows["Finding Labels"], "t").sum(axis=1) == 0)[:8]
    rows = rows.iloc[healthy]
    negative = np.zeros((len(rows), len(TASK_NAMES)), dtype=bool)
    positive = negative.copy()
    positive[:, TASK_NAMES.index(task)] = True
    with_it, without = render.render_images(rows, positive, 64, 0), render.render_images(rows, negative, 64, 0)
    diff = np.abs(with_it.astype(int) - without.astype(int))
    assert (diff.reshape(len(rows), -1).max(axis=1) >= 8).all(), task


def test_cardiomegaly_brightens_the_heart_border(nih_table) -> None:
    rows = nih_sample.sample_nih_rows(400, 0, nih_table)
    rows = rows.iloc[np.flatnonzero(parse_finding_labels(rows["Finding Labels"], "t").sum(axis=1) == 0)[:16]]
    rendered = np.zeros((len(rows), len(TASK_NAMES)), dtype=bool)
    normal = render.render_images(rows, rendered, 64, 0).astype(float)
    rendered[:, TASK_NAMES.index("Cardiomegaly")] = True
    enlarged = render.render_images(rows, rendered, 64, 0).astype(float)
    # Image right of the midline, heart level: lung becomes heart, so it brightens.
    region = (slice(None), slice(32, 48), slice(36, 48))
    assert (enlarged[region] - normal[region]).mean() > 5


def test_label_noise_rates(nih_table) -> None:
    labels = parse_finding_labels(nih_table["Finding Labels"], "t")
    prevalence = labels.mean(axis=0)
    rendered = noise.render_labels(labels, nih_table["Image Index"], 0, prevalence)
    positives = labels.astype(bool)
    dropped = 1 - rendered[positives].mean()
    assert abs(dropped - params.SIGNATURE_DROP_RATE) < 0.005
    spurious = rendered[~positives].sum() / (params.SPURIOUS_RATE * (prevalence * (~positives).sum(axis=0)).sum())
    assert 0.8 < spurious < 1.2


@pytest.mark.parametrize(
    "field, value, message",
    [("synth_images", 10, "--synth-images"), ("synth_images", 200_000, "112120"), ("image_size", 8, "--image-size")],
)
def test_bad_requests_are_user_errors(tmp_path: Path, field: str, value: int, message: str) -> None:
    bad = dataclasses.replace(request(tmp_path), **{field: value})
    with pytest.raises(UserError, match=message):
        loader.load_cxr14_synth(bad, no_progress)
    assert not (tmp_path / "cxr14-synth").exists()


def test_missing_torchxrayvision_data_is_a_user_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(writer, "TABLE_FILE", "no_such_table.csv.gz")
    with pytest.raises(UserError, match="torchxrayvision's data folder"):
        loader.load_cxr14_synth(request(tmp_path), no_progress)
