"""cxr14-synth: real NIH labels, seeded rendering, patient splits, and safe caching on disk."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mtlbench.config import build_config
from mtlbench.datasets.base import DataRequest, no_progress
from mtlbench.datasets.cxr14_synth import loader, nih_sample, noise, params, render, writer
from mtlbench.datasets.nih_layout import parse_finding_labels, read_image_list
from mtlbench.datasets.nih_tables import read_nih_table
from mtlbench.errors import UserError
from mtlbench.registry import DATASETS
from mtlbench.tasks import TASK_NAMES

COUNT, TEST_COUNT, SIZE = 200, 60, 32  # train/val images, test images, px
NEVER_A_PID = 2**22 + 1  # above the largest pid_max Linux allows


def request(data_dir: Path, seed: int = 0, **kw) -> DataRequest:
    return DataRequest(
        data_dir=data_dir,
        image_size=SIZE,
        **{"synth_images": COUNT, "synth_test_images": TEST_COUNT, "data_seed": seed, **kw},
    )


def generate(data_dir: Path, seed: int = 0) -> Path:
    root = loader.dataset_root(request(data_dir, seed))
    return writer.ensure_generated(root, COUNT, TEST_COUNT, SIZE, seed, no_progress)


def split_labels(table, names: list[str]) -> np.ndarray:
    """(N, 14) labels of the NIH table rows named `names`."""
    return parse_finding_labels(table.set_index("Image Index").loc[names, "Finding Labels"], "table")


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
    drawn = nih_sample.sample_split(3000, 3000, 7, nih_table)
    for names in (drawn.train_val, drawn.test):
        sample = split_labels(nih_table, names).mean(axis=0)
        tolerance = np.maximum(4 * np.sqrt(full * (1 - full) / 3000), 0.004)
        assert np.all(np.abs(sample - full) <= tolerance), dict(zip(TASK_NAMES, sample - full))
        assert 0.15 < sample[TASK_NAMES.index("Infiltration")] < 0.21


def test_test_split_holds_the_natural_prevalence(nih_table) -> None:
    # Test patients are a label-blind share of the NIH patients, so over data seeds the test split's
    # prevalence is the table's. (Drawing test images from the patients a train/val sample left
    # over would not be: it under-represents patients with many images, who are sicker; at the
    # quick preset's sizes Effusion would fall to 0.88 and Infiltration to 0.90 of the table's.)
    full = parse_finding_labels(nih_table["Finding Labels"], "table").mean(axis=0)
    quick = build_config("quick")
    ratios = np.mean(
        [
            split_labels(
                nih_table, nih_sample.sample_split(quick.synth_images, quick.synth_test_images, seed, nih_table).test
            ).mean(axis=0)
            / full
            for seed in range(5)
        ],
        axis=0,
    )
    common = np.argsort(full)[-5:]  # Infiltration, Effusion, Atelectasis, Nodule, Mass
    assert np.all(np.abs(ratios[common] - 1) < 0.06), dict(zip(np.array(TASK_NAMES)[common], ratios[common]))


def test_csv_keeps_real_rows_exactly(generated: Path, nih_table) -> None:
    import pandas as pd

    written = pd.read_csv(generated / "Data_Entry_2017_v2020.csv", dtype={"Image Index": str, "Finding Labels": str})
    assert list(written.columns) == list(nih_table.columns) and len(written) == COUNT + TEST_COUNT
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


def test_split_lists_have_the_asked_sizes_and_no_shared_patient(generated: Path) -> None:
    import pandas as pd

    table = pd.read_csv(generated / "Data_Entry_2017_v2020.csv").set_index("Image Index")
    train_val_names, test_names = (read_image_list(generated / f) for f in ("train_val_list.txt", "test_list.txt"))
    assert (len(train_val_names), len(test_names)) == (COUNT, TEST_COUNT)
    assert not set(table.loc[train_val_names, "Patient ID"]) & set(table.loc[test_names, "Patient ID"])
    stats = json.loads((generated / "synth.json").read_text())
    assert stats["count"] == COUNT and stats["test_count"] == TEST_COUNT
    assert stats["stats"]["test_label_positives"] == dict(
        zip(TASK_NAMES, split_labels(table.reset_index(), test_names).sum(axis=0).tolist())
    )


@pytest.mark.parametrize("test_count", [80, 12_000])
def test_test_size_is_synth_test_images_whatever_synth_images(nih_table, test_count: int) -> None:
    patients = nih_table.set_index("Image Index")["Patient ID"]
    drawn = {count: nih_sample.sample_split(count, test_count, 0, nih_table) for count in (50, 1600, 8000, 60_000)}
    for count, sample in drawn.items():
        assert (len(sample.train_val), len(sample.test)) == (count, test_count)
        assert not set(patients[sample.train_val]) & set(patients[sample.test])
        assert len(sample.rows) == count + test_count and sample.rows["Image Index"].is_unique
    assert len({tuple(s.test) for s in drawn.values()}) == 1  # the same test images whatever the training size
    assert set(drawn[50].train_val) <= set(drawn[1600].train_val) <= set(drawn[8000].train_val)


def test_train_val_does_not_depend_on_the_test_size(nih_table) -> None:
    small, large = (nih_sample.sample_split(1600, n, 3, nih_table) for n in (80, 12_000))
    assert small.train_val == large.train_val and set(small.test) < set(large.test)


def test_quick_preset_has_at_least_20_test_positives_per_task(nih_table) -> None:
    quick = build_config("quick")
    test = nih_sample.sample_split(quick.synth_images, quick.synth_test_images, quick.data_seed, nih_table).test
    positives = dict(zip(TASK_NAMES, split_labels(nih_table, test).sum(axis=0).tolist()))
    assert len(test) == quick.synth_test_images == 12_000
    assert positives == {  # the draw is deterministic: these are its counts (generator version 4)
        "Atelectasis": 1236,
        "Cardiomegaly": 344,
        "Effusion": 1416,
        "Infiltration": 2097,
        "Mass": 640,
        "Nodule": 705,
        "Pneumonia": 143,
        "Pneumothorax": 615,
        "Consolidation": 477,
        "Edema": 247,
        "Emphysema": 238,
        "Fibrosis": 147,
        "Pleural_Thickening": 373,
        "Hernia": 21,
    }
    assert min(positives.values()) >= 20


def test_changing_the_test_size_keeps_train_val_files_and_changes_the_data_identity(
    generated: Path, tmp_path: Path
) -> None:
    other = dataclasses.replace(request(tmp_path), synth_test_images=TEST_COUNT + 40)
    bundle = loader.load_cxr14_synth(other, no_progress)
    root = loader.dataset_root(other)
    assert root.name == f"n{COUNT}-test{TEST_COUNT + 40}-px{SIZE}-seed0" != generated.name
    assert len(bundle.test) == TEST_COUNT + 40 and len(bundle.train) + len(bundle.val) == COUNT
    names = read_image_list(generated / "train_val_list.txt")
    assert read_image_list(root / "train_val_list.txt") == names
    for name in names:  # the train/val images are the same files, byte for byte
        assert (root / "images" / name).read_bytes() == (generated / "images" / name).read_bytes(), name
    assert set(read_image_list(generated / "test_list.txt")) < set(read_image_list(root / "test_list.txt"))
    first = loader.load_cxr14_synth(request(generated.parent.parent), no_progress)
    assert first.info["fingerprint"] != bundle.info["fingerprint"]  # a run's data identity
    assert first.info["cache_fingerprint"] != bundle.info["cache_fingerprint"]  # the image cache's key


def test_loader_returns_disjoint_patient_splits(tmp_path: Path) -> None:
    bundle = loader.load_cxr14_synth(request(tmp_path, seed=2), no_progress)
    patients = [set(s.patient_ids) for s in (bundle.train, bundle.val, bundle.test)]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert len(bundle.train) + len(bundle.val) == COUNT and len(bundle.test) == TEST_COUNT
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
    (root / "synth.json").write_text(json.dumps(params.generator_params(COUNT, TEST_COUNT, SIZE, 0)))
    bundle = loader.load_cxr14_synth(request(tmp_path), no_progress)
    assert not partial.exists()
    assert (root / writer.COMPLETE_MARKER).is_file()
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == COUNT + TEST_COUNT
    assert [p.name for p in root.parent.iterdir()] == [root.name]


@pytest.mark.parametrize("stale", ["older version", "version 3 (no test_count)"])
def test_changed_generator_parameters_regenerate(tmp_path: Path, stale: str) -> None:
    root = generate(tmp_path)
    stored = json.loads((root / "synth.json").read_text())
    if stale == "older version":
        stored["version"] = -1
    else:  # what version 3 wrote: `count` images in all, a fifth of their patients for test
        stored = {**{k: v for k, v in stored.items() if k != "test_count"}, "version": 3}
    (root / "synth.json").write_text(json.dumps(stored))
    (root / "test_list.txt").write_text("stale\n")
    generate(tmp_path)
    assert json.loads((root / "synth.json").read_text())["version"] == params.GENERATOR_VERSION == 5
    assert len(read_image_list(root / "test_list.txt")) == TEST_COUNT


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
    # Version 5 calibrates Pneumonia's own signature to nearly nothing (strength 0.05: its label is
    # learnt through the infiltration and consolidation drawn with it, as real pneumonia is an airspace
    # opacity; params.FINDING_STRENGTH): it still changes every image, by 2-5 grey levels here.
    least = 2 if task == "Pneumonia" else 8
    assert (diff.reshape(len(rows), -1).max(axis=1) >= least).all(), task


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
    [
        ("synth_images", 10, "--synth-images must be between 50 and 112120"),
        ("synth_images", 200_000, "112120"),
        (
            "synth_images",
            100_000,
            r"--synth-images must be at most 89,677 with --data-seed 0, got 100,000 "
            r"\(train/val images are drawn from the NIH table's patients outside the 20%",
        ),
        (
            "synth_test_images",
            10,
            r"--synth-test-images must be between 50 and 112120 \(the NIH table's rows\), got 10",
        ),
        ("synth_test_images", 200_000, "--synth-test-images must be between 50 and 112120"),
        (
            "synth_test_images",
            30_000,
            "--synth-test-images must be at most 22,443 with --data-seed 0, got 30,000 "
            r"\(test images are drawn from a seeded 20% of the NIH table's patients",
        ),
        ("image_size", 8, "--image-size"),
    ],
)
def test_bad_requests_are_user_errors(tmp_path: Path, field: str, value: int, message: str) -> None:
    bad = dataclasses.replace(request(tmp_path), **{field: value})
    with pytest.raises(UserError, match=message) as caught:
        loader.load_cxr14_synth(bad, no_progress)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "cxr14-synth").exists()


def test_missing_torchxrayvision_data_is_a_user_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(writer, "TABLE_FILE", "no_such_table.csv.gz")
    with pytest.raises(UserError, match="torchxrayvision's data folder"):
        loader.load_cxr14_synth(request(tmp_path), no_progress)


def test_synth_missing_leaves_out_a_seeded_fraction_of_labels_per_task(tmp_path: Path) -> None:
    full = loader.load_cxr14_synth(request(tmp_path), no_progress)
    gappy = loader.load_cxr14_synth(request(tmp_path, synth_missing=0.3), no_progress)
    labels = np.concatenate([s.labels for s in gappy.splits().values()])
    complete = np.concatenate([s.labels for s in full.splits().values()])
    assert labels.dtype == np.float32 and complete.dtype == np.uint8
    gone = np.isnan(labels)
    assert 0.25 < gone.mean() < 0.35 and (gone.mean(axis=0) > 0.15).all()  # per task, about 30%
    assert (labels[~gone] == complete[~gone]).all()  # what is kept is the real label
    assert gappy.info["synth_missing"] == 0.3
    assert gappy.info["labelled"]["test"]["Hernia"] == int((~np.isnan(gappy.test.labels[:, -1])).sum())
    again = loader.leave_out_labels(full, 0.3, 0)
    assert np.array_equal(np.isnan(again.train.labels), np.isnan(gappy.train.labels))  # seeded
    # an image's missing labels depend on the image, not on the split's other images
    alone = loader.leave_out_labels(dataclasses.replace(full, train=full.test), 0.3, 0)
    assert np.array_equal(np.isnan(alone.train.labels), np.isnan(gappy.test.labels))
    assert not np.array_equal(np.isnan(loader.leave_out_labels(full, 0.3, 1).train.labels), gone[: len(full.train)])


def test_synth_missing_is_part_of_the_run_identity() -> None:
    base = build_config("smoke")
    assert dataclasses.replace(base, synth_missing=0.3).config_hash() != base.config_hash()
    assert "synth_missing" not in base.hashed_fields()  # at 0, earlier runs keep their identity
    with pytest.raises(UserError, match="cxr14-synth only"):
        build_config("smoke", [({"synth_missing": 0.3, "dataset": "nih-cxr14"}, "command line")])
