"""The NIH ChestX-ray14 layout reader: labels, splits, image modes, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mtlbench.datasets.base import DataRequest, no_progress
from mtlbench.datasets.nih_layout import parse_finding_labels, read_nih_layout
from mtlbench.errors import UserError
from mtlbench.tasks import TASK_NAMES

FINDINGS = ["No Finding", "Cardiomegaly", "Effusion|Mass", "Hernia", "No Finding", "Nodule|Infiltration"]


def make_layout(
    root: Path, patients: int = 20, per_patient: int = 2, sex_column: str = "Patient Gender", size: int = 8
) -> pd.DataFrame:
    """A tiny NIH layout: `patients` patients, the last quarter of them in test_list.txt."""
    (root / "images").mkdir(parents=True)
    rows = []
    for p in range(1, patients + 1):
        for f in range(per_patient):
            name = f"{p:08d}_{f:03d}.png"
            value = (p * 7 + f * 3) % 256
            Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(root / "images" / name)
            rows.append(
                {
                    "Image Index": name,
                    "Finding Labels": FINDINGS[(p + f) % len(FINDINGS)],
                    "Follow-up #": f,
                    "Patient ID": p,
                    "Patient Age": 40 + p,
                    sex_column: "F" if p % 2 else "M",
                    "View Position": "PA" if f % 2 == 0 else "AP",
                }
            )
    table = pd.DataFrame(rows)
    table.to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    test = table["Patient ID"] > patients * 3 // 4
    (root / "train_val_list.txt").write_text("\n".join(table["Image Index"][~test]) + "\n")
    (root / "test_list.txt").write_text("\n".join(table["Image Index"][test]) + "\n")
    return table


def request(tmp_path: Path, **kw) -> DataRequest:
    return DataRequest(data_dir=tmp_path, image_size=kw.pop("image_size", 8), **kw)


def test_reads_splits_labels_and_images(tmp_path: Path) -> None:
    table = make_layout(tmp_path / "nih")
    bundle = read_nih_layout(tmp_path / "nih", request(tmp_path, val_fraction=0.2), no_progress, "nih")
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (24, 6, 10)
    by_name = table.set_index("Image Index")
    for split in (bundle.train, bundle.val, bundle.test):
        for name, labels, image, patient in zip(
            split.image_ids, split.labels, split.take(slice(None)), split.patient_ids
        ):
            row = by_name.loc[name]
            expected = {t for t in row["Finding Labels"].split("|") if t != "No Finding"}
            assert {TASK_NAMES[i] for i in np.flatnonzero(labels)} == expected
            assert patient == row["Patient ID"]
            assert image.dtype == np.uint8 and image.shape == (8, 8)
            p, f = int(name[:8]), int(name[9:12])
            assert image[0, 0] == (p * 7 + f * 3) % 256
    assert bundle.info["images"] == {"train": 24, "val": 6, "test": 10}
    assert bundle.info["patients"] == {"train": 12, "val": 3, "test": 5}
    assert len(bundle.info["fingerprint"]) == 16


def test_validation_is_carved_by_patient_and_seeded(tmp_path: Path) -> None:
    make_layout(tmp_path / "nih", patients=40)
    load = lambda seed: read_nih_layout(  # noqa: E731
        tmp_path / "nih", request(tmp_path, data_seed=seed, val_fraction=0.25), no_progress, "nih"
    )
    a, again, other = load(0), load(0), load(1)
    splits = [set(a.train.patient_ids), set(a.val.patient_ids), set(a.test.patient_ids)]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    assert np.array_equal(a.val.image_ids, again.val.image_ids)
    assert a.info["fingerprint"] == again.info["fingerprint"]
    assert set(a.val.patient_ids) != set(other.val.patient_ids)
    assert a.info["fingerprint"] != other.info["fingerprint"]


@pytest.mark.parametrize("views, kept", [("PA", "PA"), ("AP", "AP")])
def test_views_filter(tmp_path: Path, views: str, kept: str) -> None:
    table = make_layout(tmp_path / "nih")
    bundle = read_nih_layout(tmp_path / "nih", request(tmp_path, views=views), no_progress, "nih")
    view_of = dict(zip(table["Image Index"], table["View Position"]))
    for split in (bundle.train, bundle.val, bundle.test):
        assert len(split) and {view_of[n] for n in split.image_ids} == {kept}


def test_unknown_view_is_a_user_error(tmp_path: Path) -> None:
    make_layout(tmp_path / "nih")
    with pytest.raises(UserError, match="LL"):
        read_nih_layout(tmp_path / "nih", request(tmp_path, views="LL"), no_progress, "nih")


@pytest.mark.parametrize("sex_column", ["Patient Sex", "Patient Gender"])
def test_either_sex_column_name(tmp_path: Path, sex_column: str) -> None:
    make_layout(tmp_path / "nih", sex_column=sex_column)
    assert len(read_nih_layout(tmp_path / "nih", request(tmp_path), no_progress, "nih").train)


def test_unknown_label_names_label_and_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"'Pneumothorax2'.*table\.csv"):
        parse_finding_labels(["No Finding", "Mass|Pneumothorax2"], "table.csv")
    table = make_layout(tmp_path / "nih")
    table.loc[3, "Finding Labels"] = "Infiltrate"
    table.to_csv(tmp_path / "nih" / "Data_Entry_2017_v2020.csv", index=False)
    with pytest.raises(UserError, match=r"'Infiltrate'.*Data_Entry_2017_v2020\.csv"):
        read_nih_layout(tmp_path / "nih", request(tmp_path), no_progress, "nih")


def test_parse_labels_in_task_order() -> None:
    labels = parse_finding_labels(["No Finding", "Hernia|Atelectasis"], "x.csv")
    assert labels.dtype == np.uint8 and labels.shape == (2, 14)
    assert labels[0].sum() == 0 and labels[1, 0] == 1 and labels[1, 13] == 1 and labels[1].sum() == 2


def test_old_csv_name_is_accepted(tmp_path: Path) -> None:
    make_layout(tmp_path / "nih")
    (tmp_path / "nih" / "Data_Entry_2017_v2020.csv").rename(tmp_path / "nih" / "Data_Entry_2017.csv")
    assert read_nih_layout(tmp_path / "nih", request(tmp_path), no_progress, "nih").info["csv"] == "Data_Entry_2017.csv"


@pytest.mark.parametrize(
    "remove, named",
    [
        ("", "nih"),
        ("Data_Entry_2017_v2020.csv", "Data_Entry_2017"),
        ("train_val_list.txt", "train_val_list.txt"),
        ("test_list.txt", "test_list.txt"),
        ("images/00000002_001.png", "1 of 40 listed images are missing"),
    ],
)
def test_missing_files_are_user_errors_naming_the_path(tmp_path: Path, remove: str, named: str) -> None:
    make_layout(tmp_path / "nih")
    target = tmp_path / "nih" / remove
    if remove:
        target.unlink()
    root = tmp_path / "nih" if remove else tmp_path / "absent" / "nih"
    with pytest.raises(UserError, match=named):
        read_nih_layout(root, request(tmp_path), no_progress, "nih")


def test_list_entry_missing_from_csv(tmp_path: Path) -> None:
    make_layout(tmp_path / "nih")
    with open(tmp_path / "nih" / "test_list.txt", "a") as f:
        f.write("99999999_000.png\n")
    with pytest.raises(UserError, match=r"99999999_000\.png"):
        read_nih_layout(tmp_path / "nih", request(tmp_path), no_progress, "nih")


def test_progress_counts_every_image(tmp_path: Path) -> None:
    make_layout(tmp_path / "nih")
    seen: list[tuple[str, int]] = []
    advanced: list[int] = []

    def progress(description: str, total: int):
        seen.append((description, total))
        return lambda n=1: advanced.append(n)

    read_nih_layout(tmp_path / "nih", request(tmp_path), progress, "nih")
    assert seen == [("caching nih images at 8 px", 40)] and sum(advanced) == 40
    seen.clear()
    read_nih_layout(tmp_path / "nih", request(tmp_path), progress, "nih")
    assert seen == []  # the second load reads the cache only


def test_link_loops_are_skipped_counted_and_said(tmp_path: Path) -> None:
    root = tmp_path / "nih"
    make_layout(root)
    (root / "a").symlink_to("b")  # a -> b -> a
    (root / "b").symlink_to("a")
    (root / "images" / "loop_1.png").symlink_to("loop_2.png")  # named like an image
    (root / "images" / "loop_2.png").symlink_to("loop_1.png")
    (root / "images" / "gone.png").symlink_to(tmp_path / "deleted.png")
    bundle = read_nih_layout(root, request(tmp_path), no_progress, "nih")
    assert (len(bundle.train) + len(bundle.val), len(bundle.test)) == (30, 10)
    assert bundle.info["skipped_links"] == 5
    assert [w for w in bundle.info["warnings"] if "link" in w] == [
        f"nih: skipped 5 link(s) under {root} that loop or lead nowhere, e.g. a"
    ]


def test_an_image_listed_twice_is_used_once_and_said(tmp_path: Path) -> None:
    root = tmp_path / "nih"
    table = make_layout(root)
    once = read_nih_layout(root, request(tmp_path, val_fraction=0.2), no_progress, "nih")
    assert not any("more than once" in w for w in once.info["warnings"])
    names = (root / "train_val_list.txt").read_text().splitlines()
    (root / "train_val_list.txt").write_text("\n".join([*names, names[3], names[3]]) + "\n")  # lines 4, 31, 32
    bundle = read_nih_layout(root, request(tmp_path, val_fraction=0.2), no_progress, "nih")
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (24, 6, 10)
    for split in (bundle.train, bundle.val):
        assert len(set(split.image_ids)) == len(split)
    assert bundle.info["fingerprint"] == once.info["fingerprint"]  # the same data as without the repeats
    assert bundle.info["repeated_in_lists"] == {"train_val_list.txt": 1, "test_list.txt": 0}
    assert [w for w in bundle.info["warnings"] if "more than once" in w] == [
        f"nih: {root / 'train_val_list.txt'} lists 1 image(s) more than once, e.g. {names[3]!r} on lines 4, 31, 32; "
        "each is used once"
    ]
    assert table["Image Index"].iloc[3] == names[3]


def _as_archives(root: Path) -> None:
    """Move a flat layout's images into images_001/images and images_002/images (half each)."""
    names = sorted(p.name for p in (root / "images").iterdir())
    for i, name in enumerate(names):
        folder = root / f"images_{1 + 2 * i // len(names):03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        (root / "images" / name).rename(folder / name)
    (root / "images").rmdir()


@pytest.mark.parametrize("same_bytes", [True, False], ids=["identical-copy", "different-bytes"])
def test_one_name_in_two_archive_folders(tmp_path: Path, same_bytes: bool) -> None:
    root = tmp_path / "nih"
    make_layout(root)
    _as_archives(root)
    used = root / "images_001" / "images" / "00000001_000.png"
    copy = root / "images_002" / "images" / used.name
    if same_bytes:
        copy.write_bytes(used.read_bytes())
    else:
        Image.fromarray(np.full((8, 8), 200, dtype=np.uint8)).save(copy)
    bundle = read_nih_layout(root, request(tmp_path), no_progress, "nih")
    split = next(s for s in (bundle.train, bundle.val) if used.name in s.image_ids)
    image = split.take(np.flatnonzero(split.image_ids == used.name))[0]
    assert image[0, 0] == (1 * 7 + 0 * 3) % 256  # the first folder's copy
    said = [w for w in bundle.info["warnings"] if "two folders" in w]
    if same_bytes:
        assert said == []
    else:
        assert said == [
            f"nih: {used.name} is in two folders with different bytes: {used} is used, {copy} is not; "
            "delete the wrong copy"
        ]


def test_tasks_with_one_class_in_a_split_are_said_at_load(tmp_path: Path) -> None:
    make_layout(tmp_path / "nih")  # the findings used are Cardiomegaly, Effusion, Mass, Hernia, Nodule, Infiltration
    bundle = read_nih_layout(tmp_path / "nih", request(tmp_path, val_fraction=0.2), no_progress, "nih")
    lines = {w.split(" split ")[0]: w for w in bundle.info["warnings"] if " split (" in w}
    assert set(lines) == {"nih: the train", "nih: the val", "nih: the test"}
    assert lines["nih: the val"].startswith("nih: the val split (6 images) has no positive Atelectasis, ")
    assert "their validation AUROC is undefined" in lines["nih: the val"]
    assert "Pneumonia" in lines["nih: the test"] and "report shows —" in lines["nih: the test"]
