"""chestmnist: MedMNIST's npz read through medmnist, official split, task order, sizes, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtlbench.datasets import chestmnist
from mtlbench.datasets.base import DataRequest, no_progress
from mtlbench.datasets.decode import resize_arrays
from mtlbench.errors import UserError
from mtlbench.registry import DATASETS
from mtlbench.tasks import TASK_NAMES
from tests.dataset_fixtures import CHESTMNIST_COUNTS as COUNTS
from tests.dataset_fixtures import write_npz


def request(folder: Path, size: int = 28, **kw) -> DataRequest:
    return DataRequest(data_dir=folder, image_size=size, **kw)


def test_registered() -> None:
    assert DATASETS.get("chestmnist") is chestmnist.load_chestmnist


def test_official_split_labels_and_pixels(tmp_path: Path) -> None:
    path = write_npz(tmp_path)
    bundle = chestmnist.load_chestmnist(request(tmp_path), no_progress)
    with np.load(path) as npz:
        for split, n in COUNTS.items():
            got = bundle.splits()[split]
            assert len(got) == n
            assert np.array_equal(got.take(slice(None)), npz[f"{split}_images"])
            assert np.array_equal(got.labels, npz[f"{split}_labels"])  # same order as TASK_NAMES
    assert bundle.info["images"] == COUNTS and bundle.info["native_size"] == 28
    assert not set(bundle.train.patient_ids) & set(bundle.test.patient_ids)


def test_label_columns_map_onto_the_shared_task_names() -> None:
    from medmnist import INFO

    theirs = INFO["chestmnist"]["label"]
    order = chestmnist.task_order()
    for t, task in enumerate(TASK_NAMES):
        assert task.lower().replace("_", " ").startswith(theirs[str(order[t])])


def test_other_sizes_are_area_resized_from_the_next_larger_file(tmp_path: Path) -> None:
    path = write_npz(tmp_path, size=64)
    bundle = chestmnist.load_chestmnist(request(tmp_path, size=32), no_progress)
    with np.load(path) as npz:
        expected, _ = resize_arrays(npz["val_images"], 32)
    assert bundle.val.image_shape == (32, 32) and np.array_equal(bundle.val.take(slice(None)), expected)
    assert bundle.info["native_size"] == 64 and bundle.info["file"] == "chestmnist_64.npz"


@pytest.mark.parametrize(
    "size, expected", [(28, "chestmnist.npz"), (64, "chestmnist_64.npz"), (100, "chestmnist_128.npz")]
)
def test_missing_file_names_the_exact_file_and_folder(tmp_path: Path, size: int, expected: str) -> None:
    with pytest.raises(UserError, match=rf"chestmnist: {tmp_path}/{expected} not found.*--download"):
        chestmnist.load_chestmnist(request(tmp_path, size=size), no_progress)


def test_download_goes_through_medmnist(tmp_path: Path, monkeypatch) -> None:
    import medmnist

    fetched = []

    def fake_download(self):
        fetched.append((self.root, self.size_flag))
        write_npz(Path(self.root), size=self.size)

    monkeypatch.setattr(medmnist.ChestMNIST, "download", fake_download)
    bundle = chestmnist.load_chestmnist(request(tmp_path / "new", size=64, download=True), no_progress)
    assert fetched == [(str(tmp_path / "new"), "_64")] and len(bundle.test) == COUNTS["test"]


def test_failed_download_is_a_user_error(tmp_path: Path, monkeypatch) -> None:
    import medmnist

    def offline(self):
        raise ConnectionError("no network")

    monkeypatch.setattr(medmnist.ChestMNIST, "download", offline)
    with pytest.raises(UserError, match="download of chestmnist.npz .* failed .*no network"):
        chestmnist.load_chestmnist(request(tmp_path, download=True), no_progress)


def test_wrong_keys_and_shapes_are_user_errors(tmp_path: Path) -> None:
    write_npz(tmp_path / "a", val_labels=None)
    with pytest.raises(UserError, match="has no 'val_labels'"):
        chestmnist.load_chestmnist(request(tmp_path / "a"), no_progress)
    write_npz(tmp_path / "b", test_labels=np.zeros((12, 5), dtype=np.uint8))
    with pytest.raises(UserError, match=r"test_labels has shape \(12, 5\)"):
        chestmnist.load_chestmnist(request(tmp_path / "b"), no_progress)
    write_npz(tmp_path / "c", train_images=np.zeros((30, 28, 28, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="train_images of uint8 .*expected uint8 \\(N, 28, 28\\)"):
        chestmnist.load_chestmnist(request(tmp_path / "c"), no_progress)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "chestmnist.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read .*chestmnist.npz"):
        chestmnist.load_chestmnist(request(tmp_path / "d"), no_progress)


def test_views_and_too_large_sizes_are_refused(tmp_path: Path) -> None:
    write_npz(tmp_path)
    with pytest.raises(UserError, match="no view positions"):
        chestmnist.load_chestmnist(request(tmp_path, views="PA"), no_progress)
    with pytest.raises(UserError, match="larger than ChestMNIST's largest file"):
        chestmnist.load_chestmnist(request(tmp_path, size=256), no_progress)


def test_second_load_reads_only_the_cache_and_a_new_file_gets_a_new_one(tmp_path: Path, monkeypatch) -> None:
    write_npz(tmp_path)
    first = chestmnist.load_chestmnist(request(tmp_path), no_progress)
    with monkeypatch.context() as patch:
        patch.setattr(chestmnist, "_read_images", lambda path: pytest.fail("decoded the npz again"))
        second = chestmnist.load_chestmnist(request(tmp_path), no_progress)
    assert first.info["fingerprint"] == second.info["fingerprint"]
    write_npz(tmp_path, seed=1)
    third = chestmnist.load_chestmnist(request(tmp_path), no_progress)
    assert third.info["cache"] != first.info["cache"]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_an_empty_split_is_refused_at_load_before_any_cache(tmp_path: Path, split: str) -> None:
    counts = {**COUNTS, split: 0}
    write_npz(tmp_path, counts=counts)
    with pytest.raises(
        UserError,
        match=rf"chestmnist: .*chestmnist.npz holds no {split} images \(.*0 {split}.*\); "
        r"training needs all three splits .*download it again",
    ):
        chestmnist.load_chestmnist(request(tmp_path), no_progress)
    assert not (tmp_path / "mtlbench-cache").exists()


def test_a_task_without_positives_in_a_split_is_said_at_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = {s: (rng.random((n, 14)) < 0.5).astype(np.uint8) for s, n in COUNTS.items()}
    labels["val"][:, TASK_NAMES.index("Hernia")] = 0  # ChestMNIST's columns are in TASK_NAMES order
    labels["test"][:, TASK_NAMES.index("Pneumonia")] = 0
    write_npz(tmp_path, **{f"{s}_labels": v for s, v in labels.items()})
    warnings = chestmnist.load_chestmnist(request(tmp_path), no_progress).info["warnings"]
    assert warnings == [
        "chestmnist: the val split (8 images) has no positive Hernia; their validation AUROC is undefined: "
        "model selection averages the other tasks",
        "chestmnist: the test split (12 images) has no positive Pneumonia; their test AUROC cannot be computed: "
        "the report shows — for them and averages the other tasks",
    ]
