"""nih-cxr14: both download layouts, both CSV versions, odd and broken PNGs, missing files, the cache."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mtlbench.datasets import image_cache
from mtlbench.datasets.base import DataRequest, no_progress
from mtlbench.datasets.decode import decode_grayscale
from mtlbench.datasets.nih_cxr14 import load_nih_cxr14
from mtlbench.datasets.nih_tables import read_nih_table
from mtlbench.errors import UserError
from mtlbench.registry import DATASETS
from tests.dataset_fixtures import save_as, truncate, write_nih_download

SIZE = 32


@pytest.fixture(scope="module")
def table():
    return read_nih_table()


@pytest.fixture(scope="module")
def flat(tmp_path_factory, table):
    """A pristine flat download; tests that change files copy it first."""
    return write_nih_download(tmp_path_factory.mktemp("nih") / "flat", table=table)


def copy_of(download, tmp_path: Path) -> Path:
    root = tmp_path / "nih"
    shutil.copytree(download.root, root, ignore=shutil.ignore_patterns("mtlbench-cache"))
    return root


def request(root: Path, **kw) -> DataRequest:
    return DataRequest(data_dir=root, image_size=kw.pop("image_size", SIZE), **kw)


def test_registered() -> None:
    assert DATASETS.get("nih-cxr14") is load_nih_cxr14


def test_flat_layout_gives_official_test_split_and_patient_disjoint_splits(flat) -> None:
    bundle = load_nih_cxr14(request(flat.root), no_progress)
    assert set(bundle.test.image_ids) == set(flat.test)
    assert set(bundle.train.image_ids) | set(bundle.val.image_ids) == set(flat.train_val)
    patient = flat.patient_of()
    for split in bundle.splits().values():
        assert [patient[n] for n in split.image_ids] == split.patient_ids.tolist()
    groups = [set(s.patient_ids.tolist()) for s in bundle.splits().values()]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert bundle.info["missing"] == {"train": 0, "val": 0, "test": 0}


def test_pixels_are_the_area_resized_files(flat) -> None:
    bundle = load_nih_cxr14(request(flat.root, image_size=16), no_progress)
    for split in bundle.splits().values():
        for i in (0, len(split) - 1):
            expected = decode_grayscale(flat.paths[split.image_ids[i]], 16)
            assert np.array_equal(split.take([i])[0], expected)


def test_labels_follow_finding_labels(flat) -> None:
    from mtlbench.tasks import TASK_NAMES

    bundle = load_nih_cxr14(request(flat.root), no_progress)
    findings = dict(zip(flat.rows["Image Index"], flat.rows["Finding Labels"]))
    for split in bundle.splits().values():
        for name, row in zip(split.image_ids, split.labels):
            expected = {f for f in findings[name].split("|") if f != "No Finding"}
            assert {TASK_NAMES[t] for t in np.flatnonzero(row)} == expected


def test_archive_layout_and_2017_csv_give_the_same_dataset(flat, tmp_path: Path, table) -> None:
    archives = write_nih_download(tmp_path / "archives", layout="archives", csv="2017", table=table)
    assert len({p.parent.parent.name for p in archives.paths.values()}) == 12
    a = load_nih_cxr14(request(flat.root), no_progress)
    b = load_nih_cxr14(request(archives.root), no_progress)
    assert b.info["csv"] == "Data_Entry_2017.csv"
    assert a.info["fingerprint"] == b.info["fingerprint"]
    for name in ("train", "val", "test"):
        sa, sb = a.splits()[name], b.splits()[name]
        assert np.array_equal(sa.image_ids, sb.image_ids) and np.array_equal(sa.labels, sb.labels)
        assert np.array_equal(sa.take(slice(None)), sb.take(slice(None)))


def test_without_csv_the_torchxrayvision_table_is_used(flat, tmp_path: Path) -> None:
    root = copy_of(flat, tmp_path)
    (root / "Data_Entry_2017_v2020.csv").unlink()
    bundle = load_nih_cxr14(request(root), no_progress)
    assert bundle.info["csv"] == "Data_Entry_2017_v2020.csv.gz"
    reference = load_nih_cxr14(request(flat.root), no_progress)
    assert np.array_equal(bundle.train.labels, reference.train.labels)


def test_rgba_and_16_bit_files_read_as_their_grayscale(flat, tmp_path: Path) -> None:
    root = copy_of(flat, tmp_path)
    names = flat.test[:2]
    save_as(root / "images" / names[0], "RGBA")
    save_as(root / "images" / names[1], "I;16")
    odd = load_nih_cxr14(request(root), no_progress)
    plain = load_nih_cxr14(request(flat.root), no_progress)
    for name in names:
        i, j = list(odd.test.image_ids).index(name), list(plain.test.image_ids).index(name)
        assert np.abs(odd.test.take([i])[0].astype(int) - plain.test.take([j])[0]).max() <= 1


def test_missing_images_stop_with_counts_per_split_and_where_it_looked(flat, tmp_path: Path) -> None:
    root = copy_of(flat, tmp_path)
    gone = flat.test[:3] + flat.train_val[:5]
    for name in gone:
        (root / "images" / name).unlink()
    with pytest.raises(UserError) as err:
        load_nih_cxr14(request(root), no_progress)
    message = str(err.value)
    assert "8 of 120 listed images are missing" in message
    assert "test 3 of" in message and "--allow-missing" in message
    assert f"found 112 .png file(s) under {root} in images (112)" in message
    assert "\n" not in message


def test_allow_missing_trains_on_what_is_present_and_records_counts(flat, tmp_path: Path) -> None:
    root = copy_of(flat, tmp_path)
    gone = flat.test[:3] + flat.train_val[:5]
    for name in gone:
        (root / "images" / name).unlink()
    bundle = load_nih_cxr14(request(root, allow_missing=True), no_progress)
    present = sum(len(s) for s in bundle.splits().values())
    assert present == 112 and not set(gone) & {n for s in bundle.splits().values() for n in s.image_ids}
    assert bundle.info["missing"]["test"] == 3 and sum(bundle.info["missing"].values()) == 8
    assert bundle.info["listed"]["test"] == len(flat.test)


def test_only_some_archives_present(tmp_path: Path, table) -> None:
    download = write_nih_download(tmp_path / "nih", layout="archives", table=table)
    for archive in ("images_011", "images_012"):
        shutil.rmtree(download.root / archive)
    with pytest.raises(UserError, match=r"listed images are missing .*images_001/images \(10\)"):
        load_nih_cxr14(request(download.root), no_progress)
    bundle = load_nih_cxr14(request(download.root, allow_missing=True), no_progress)
    assert sum(len(s) for s in bundle.splits().values()) == 100


def test_truncated_png_is_named_and_skipped_only_under_allow_missing(flat, tmp_path: Path) -> None:
    root = copy_of(flat, tmp_path)
    broken = flat.train_val[7]
    truncate(root / "images" / broken)
    with pytest.raises(UserError, match=rf"1 image file\(s\) cannot be read: {broken} \(.*--allow-missing"):
        load_nih_cxr14(request(root), no_progress)
    bundle = load_nih_cxr14(request(root, allow_missing=True), no_progress)
    assert broken not in set(bundle.train.image_ids) | set(bundle.val.image_ids)
    assert sum(bundle.info["unreadable"].values()) == 1 and bundle.info["unreadable_files"] == [broken]


def test_patient_in_both_official_lists_is_refused(flat, tmp_path: Path) -> None:
    import pandas as pd

    root = copy_of(flat, tmp_path)
    csv = root / "Data_Entry_2017_v2020.csv"
    rows = pd.read_csv(csv)
    leaked = int(rows.loc[rows["Image Index"] == flat.train_val[0], "Patient ID"].iloc[0])
    rows.loc[rows["Image Index"] == flat.test[0], "Patient ID"] = leaked
    rows.to_csv(csv, index=False)
    with pytest.raises(UserError, match=f"patient {leaked} has images in both train_val and test"):
        load_nih_cxr14(request(root), no_progress)


def test_views_filter_is_applied_and_recorded(flat) -> None:
    bundle = load_nih_cxr14(request(flat.root, views="PA"), no_progress)
    view = dict(zip(flat.rows["Image Index"], flat.rows["View Position"]))
    assert {view[n] for s in bundle.splits().values() for n in s.image_ids} == {"PA"}
    assert bundle.info["views"] == "PA"


def test_validation_fraction_and_seed_are_recorded(flat) -> None:
    a = load_nih_cxr14(request(flat.root, val_fraction=0.2, data_seed=3), no_progress)
    b = load_nih_cxr14(request(flat.root, val_fraction=0.2, data_seed=4), no_progress)
    assert (a.info["val_fraction"], a.info["data_seed"]) == (0.2, 3)
    assert set(a.val.image_ids) != set(b.val.image_ids) and a.info["fingerprint"] != b.info["fingerprint"]


def test_wrong_layouts_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist; pass --data-dir"):
        load_nih_cxr14(request(tmp_path / "absent"), no_progress)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="train_val_list.txt does not exist"):
        load_nih_cxr14(request(tmp_path / "empty"), no_progress)


def test_cache_is_built_once_and_then_only_read(flat, tmp_path: Path, monkeypatch) -> None:
    root = copy_of(flat, tmp_path)
    load_nih_cxr14(request(root), no_progress)
    caches = list((root / "mtlbench-cache").iterdir())
    assert [c.name for c in caches if c.is_dir()] and all(c.name.startswith("nih-cxr14-px32-") for c in caches)
    monkeypatch.setattr(image_cache, "_build", lambda *a, **k: pytest.fail("rebuilt a complete cache"))
    load_nih_cxr14(request(root), no_progress)


def test_changed_files_get_a_new_cache(flat, tmp_path: Path) -> None:
    root = copy_of(flat, tmp_path)
    first = load_nih_cxr14(request(root), no_progress)
    save_as(root / "images" / flat.test[0], "I;16")  # same name, different file size
    second = load_nih_cxr14(request(root), no_progress)
    assert first.info["cache"] != second.info["cache"] and first.info["fingerprint"] != second.info["fingerprint"]


def test_interrupted_cache_build_resumes_and_equals_a_clean_build(flat, tmp_path: Path, monkeypatch) -> None:
    root = copy_of(flat, tmp_path)
    from mtlbench.datasets import nih_layout

    calls = {"n": 0}
    real_decode = nih_layout.decode_files

    def dying_decode(paths, size):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real_decode(paths, size)

    monkeypatch.setattr(nih_layout, "decode_files", dying_decode)
    monkeypatch.setattr(image_cache, "worker_count", lambda: 1)
    monkeypatch.setattr(image_cache, "THREAD_CHUNK_ROWS", 16)
    with pytest.raises(KeyboardInterrupt):
        load_nih_cxr14(request(root), no_progress)
    folder = next(p for p in (root / "mtlbench-cache").iterdir() if p.is_dir())
    manifest = json.loads((folder / "manifest.json").read_text())
    status = np.load(folder / "status.npy")
    assert manifest["state"] == "building" and 0 < (status != 0).sum() < len(status)

    monkeypatch.setattr(nih_layout, "decode_files", real_decode)
    resumed = load_nih_cxr14(request(root), no_progress)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["state"] == "complete" and manifest["resumed_rows"] == 16
    clean = load_nih_cxr14(dataclasses.replace(request(flat.root), cache_dir=tmp_path / "clean"), no_progress)
    assert resumed.info["fingerprint"] == clean.info["fingerprint"]
    for name in ("train", "val", "test"):
        assert np.array_equal(resumed.splits()[name].take(slice(None)), clean.splits()[name].take(slice(None)))
