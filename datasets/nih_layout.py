"""Reader of the NIH ChestX-ray14 on-disk layout (the real dataset and cxr14-synth share it).

    ROOT/images/<Image Index>                   PNG files, any mode (L, RGBA, I;16, RGB, ...), or
    ROOT/images_001/images/<Image Index> …      the 12-archive layout (images_001 … images_012)
    ROOT/Data_Entry_2017_v2020.csv              or Data_Entry_2017.csv: one row per image
                                                (optional for nih-cxr14: torchxrayvision ships v2020)
    ROOT/train_val_list.txt                     image names, one a line
    ROOT/test_list.txt                          image names, one a line

Images are found by name with one scan of the tree. The test split is the official list;
validation is carved out of train_val by patient. Pixels come from the image cache
(datasets/image_cache.py), built on first use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory, Split, has_missing, labelled, positives
from mtlbench.datasets.decode import decode_files
from mtlbench.datasets.image_cache import UNREADABLE, ImageCache, ensure_cache, spot_check
from mtlbench.datasets.nih_files import (  # noqa: F401  (IMAGES_DIR, read_image_list: part of this module's API)
    IMAGES_DIR,
    FoundImages,
    read_image_list,
    read_split_list,
    scan_images,
    scan_warnings,
)
from mtlbench.datasets.split_checks import label_warnings
from mtlbench.errors import UserError, one_line
from mtlbench.tasks import TASK_NAMES

CSV_NAMES: tuple[str, ...] = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
CACHE_DIR = "mtlbench-cache"
NO_FINDING = "No Finding"
VIEWS: tuple[str, ...] = ("all", "frontal", "PA", "AP")
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
PROCESS_POOL_BYTES = 64 << 20  # sources larger than this are decoded by worker processes

_REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")
_SEX_COLUMNS = ("Patient Sex", "Patient Gender")
_NAMES_SHOWN = 5
_COLUMNS_SHOWN = 12


def read_nih_layout(
    root: Path,
    request: DataRequest,
    progress: ProgressFactory,
    name: str,
    fallback_csv: Path | None = None,
    fix_hint: str | None = None,
) -> DatasetBundle:
    """Load the NIH layout under `root` into train/val/test splits backed by the image cache.

    Validation takes `request.val_fraction` of the train_val patients (seeded by
    `request.data_seed`); `request.views` then keeps PA, AP or all images. Listed images that
    are absent or unreadable stop the load unless `request.allow_missing`; their counts go into
    `info` either way. `fallback_csv` is read when `root` holds no metadata CSV. `fix_hint` says
    what to do about a damaged metadata CSV (default: restore it from the NIH download). What is
    odd but usable (links that loop, a name listed twice, copies that differ, a task with one class
    in a split; see nih_files.py and split_checks.py) becomes one line each in `info["warnings"]`.
    """
    root = Path(root)
    _check_request(request)
    if not root.is_dir():
        raise UserError(f"{name}: dataset folder {root} does not exist; pass --data-dir pointing to it")
    lists = [read_split_list(root / TRAIN_VAL_LIST), read_split_list(root / TEST_LIST)]
    train_val_names, test_names = lists[0].names, lists[1].names
    table, csv_label = read_data_entry(root, fallback_csv, fix_hint)
    labels = parse_finding_labels(table["Finding Labels"], csv_label, first_line=2)
    row_of = _index_rows(table, csv_label)
    train_val_rows = _rows_for(train_val_names, row_of, root / TRAIN_VAL_LIST, csv_label)
    test_rows = _rows_for(test_names, row_of, root / TEST_LIST, csv_label)
    patients = table["Patient ID"].to_numpy()
    check_patient_disjoint({"train_val": train_val_rows, "test": test_rows}, patients)
    train_rows, val_rows = carve_validation(train_val_rows, patients, request.val_fraction, request.data_seed)
    listed = {"train": train_rows, "val": val_rows, "test": test_rows}
    views = table["View Position"].astype(str).to_numpy()
    listed = {k: _filter_views(rows, views, request.views, k) for k, rows in listed.items()}
    names = table["Image Index"].astype(str).to_numpy()

    cache_root = request.cache_dir if request.cache_dir is not None else root / CACHE_DIR
    found = scan_images(root, skip=Path(cache_root))
    present = {k: _present(rows, names, found) for k, rows in listed.items()}
    missing = {k: int(len(listed[k]) - len(present[k])) for k in SPLIT_NAMES}
    if sum(missing.values()) and not request.allow_missing:
        raise UserError(_missing_message(name, root, listed, missing, found))
    if not all(len(present[k]) for k in SPLIT_NAMES):
        empty = [k for k in SPLIT_NAMES if not len(present[k])]
        raise UserError(f"{name}: no image of the {', '.join(empty)} split is present under {root}; {found.where()}")

    all_listed = np.concatenate([train_val_rows, test_rows])
    source = PngSource.of(name, sorted(n for n in names[all_listed] if n in found.files), found)
    cache = ensure_cache(source, request.image_size, Path(cache_root), progress, build=request.build_cache)
    split_rows, unreadable = drop_unreadable(present, names, cache)
    if sum(len(v) for v in unreadable.values()) and not request.allow_missing:
        raise UserError(unreadable_message(name, unreadable, cache))
    cache_row = cache.row_of()
    splits = {
        k: Split(
            pixels=cache.pixels,
            rows=np.array([cache_row[n] for n in names[rows]], dtype=np.int64),
            labels=labels[rows],
            image_ids=names[rows],
            patient_ids=patients[rows],
        )
        for k, rows in split_rows.items()
    }
    info = _describe(root, csv_label, splits, request, cache, listed, missing, unreadable)
    info["skipped_links"] = len(found.broken_links)
    info["repeated_in_lists"] = {lst.path.name: len(lst.repeats) for lst in lists}
    info["warnings"] = (
        [w for w in (lst.warning(name) for lst in lists) if w]
        + scan_warnings(name, found, source.names)
        + label_warnings(name, splits)
    )
    if request.spot_check:
        info["spot_check"] = {
            "checked": request.spot_check,
            "mismatched": spot_check(cache, source, request.spot_check),
        }
    return DatasetBundle(name=name, train=splits["train"], val=splits["val"], test=splits["test"], info=info)


# ----------------------------------------------------------------------------- metadata


def read_data_entry(root: Path, fallback: Path | None = None, fix_hint: str | None = None) -> tuple[pd.DataFrame, str]:
    """The metadata table (first of CSV_NAMES in `root`, else `fallback`) and where it came from.

    Both column spellings of the sex column are accepted and renamed to `Patient Sex`. A damaged
    table is a one-line UserError that names the file, the line where it can, and `fix_hint`
    (default: how to restore it).
    """
    root = Path(root)
    csv_path = next((root / n for n in CSV_NAMES if (root / n).is_file()), None)
    if csv_path is None and fallback is None:
        raise UserError(f"no metadata CSV in {root}: expected {' or '.join(CSV_NAMES)}")
    source = csv_path if csv_path is not None else fallback
    label = str(csv_path) if csv_path is not None else f"{fallback} (no {' or '.join(CSV_NAMES)} in {root})"
    # what to do about a damaged table: a CSV in the download can be restored, or removed when the
    # copy that ships with torchxrayvision can stand in for it
    fix = fix_hint or (
        "restore it from the NIH ChestX-ray14 download"
        + (" (or delete it to use the copy that ships with torchxrayvision)" if fallback is not None else "")
        if csv_path is not None
        else "reinstall torchxrayvision or put the NIH download's Data_Entry_2017_v2020.csv in the dataset folder"
    )
    try:
        table = pd.read_csv(source, dtype={"Image Index": str, "Finding Labels": str})
    except pd.errors.EmptyDataError:
        raise UserError(f"{source} is empty (no header, no rows); {fix}") from None
    except UnicodeDecodeError:
        raise UserError(f"{source} is not a UTF-8 CSV text file ({_first_non_utf8(Path(source))}); {fix}") from None
    except pd.errors.ParserError as err:
        raise UserError(f"cannot parse {source} as CSV ({one_line(err)}); {fix}") from None
    except OSError as err:
        raise UserError(f"cannot read {source} ({err.strerror or err}); {fix}") from None
    missing = [c for c in _REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        has = ", ".join(map(repr, map(str, table.columns[:_COLUMNS_SHOWN])))
        more = f" and {len(table.columns) - _COLUMNS_SHOWN} more" if len(table.columns) > _COLUMNS_SHOWN else ""
        raise UserError(
            f"{source} lacks column(s) {', '.join(map(repr, missing))} (its header has {has}{more}); "
            f"it must be the NIH Data_Entry CSV with {', '.join(map(repr, _REQUIRED_COLUMNS))}; {fix}"
        )
    if table.empty:
        raise UserError(f"{source} has a header but no rows; {fix}")
    empty = np.flatnonzero(table["Finding Labels"].isna().to_numpy())
    if len(empty):
        raise UserError(
            f"{source} has {len(empty):,} row(s) with an empty 'Finding Labels', the first on line {empty[0] + 2}; "
            f"write '{NO_FINDING}' for an image without findings, or {fix}"
        )
    sex = next((c for c in _SEX_COLUMNS if c in table.columns), None)
    if sex is not None and sex != "Patient Sex":
        table = table.rename(columns={sex: "Patient Sex"})
    return table, label


def parse_finding_labels(findings: Iterable[str], source: Path | str, first_line: int | None = None) -> np.ndarray:
    """`|`-joined NIH label strings → (N, 14) uint8 in TASK_NAMES order; `No Finding` is all zero.

    An unknown label is a UserError naming it and where it is: "line {first_line + i}" of a file
    whose first data row is on line `first_line` (2 for a CSV with a header), else "row {i + 1}".
    """
    column = {task: i for i, task in enumerate(TASK_NAMES)}
    strings = list(findings)
    labels = np.zeros((len(strings), len(TASK_NAMES)), dtype=np.uint8)
    for row, text in enumerate(strings):
        for label in str(text).split("|"):
            label = label.strip()
            if label == NO_FINDING:
                continue
            if label not in column:
                where = f"line {first_line + row}" if first_line is not None else f"row {row + 1}"
                raise UserError(
                    f"unknown finding label {label!r} in {source} ({where}, {str(text)!r}); "
                    f"known: {NO_FINDING}, {', '.join(TASK_NAMES)} ('|' between several); correct or remove that row"
                )
            labels[row, column[label]] = 1
    return labels


def carve_validation(
    rows: np.ndarray, patients: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split `rows` into (train, val) by patient: a seeded `val_fraction` of the patients go to val."""
    unique = np.unique(patients[rows])
    if len(unique) < 2:
        raise UserError("train_val holds fewer than 2 patients: cannot carve a validation split")
    n_val = int(np.clip(round(val_fraction * len(unique)), 1, len(unique) - 1))
    rng = np.random.default_rng([seed, 0x7A1])
    val_patients = unique[rng.permutation(len(unique))[:n_val]]
    in_val = np.isin(patients[rows], val_patients)
    return rows[~in_val], rows[in_val]


def check_patient_disjoint(split_rows: dict[str, np.ndarray], patients: np.ndarray) -> None:
    """UserError if any patient has images in two of the splits."""
    seen: dict[Any, str] = {}
    for split, rows in split_rows.items():
        for patient in np.unique(patients[rows]).tolist():
            if patient in seen and seen[patient] != split:
                raise UserError(
                    f"patient {patient} has images in both {seen[patient]} and {split}: "
                    "the split lists leak patients between splits"
                )
            seen[patient] = split


# ----------------------------------------------------------------------------- image files


@dataclass(frozen=True)
class PngSource:
    """The image cache's source for an NIH layout: PNG files, one cache row per name."""

    dataset: str
    names: tuple[str, ...]
    paths: tuple[str, ...]
    fingerprint: str
    use_processes: bool

    @classmethod
    def of(cls, dataset: str, names: list[str], found: FoundImages) -> "PngSource":
        """A source over `names` (all in `found`), fingerprinted by names and file sizes."""
        digest = hashlib.sha1()
        total = 0
        for n in names:
            size = found.files[n][1]
            total += size
            digest.update(f"{n}\t{size}\n".encode())
        paths = tuple(found.files[n][0] for n in names)
        return cls(dataset, tuple(names), paths, digest.hexdigest()[:16], total > PROCESS_POOL_BYTES)

    def job(self, start: int, stop: int, size: int) -> tuple[Any, tuple[Any, ...]]:
        """Decode files start..stop (a picklable call for a worker process)."""
        return decode_files, (self.paths[start:stop], size)


# ----------------------------------------------------------------------------- helpers


def _check_request(request: DataRequest) -> None:
    if request.views not in VIEWS:
        raise UserError(f"unknown views {request.views!r}; valid: {', '.join(VIEWS)}")
    if not 0.0 < request.val_fraction < 1.0:
        raise UserError(f"val_fraction must be between 0 and 1 (exclusive), got {request.val_fraction}")
    if request.image_size < 1:
        raise UserError(f"image_size must be positive, got {request.image_size}")


def _first_non_utf8(path: Path) -> str:
    """Where a file stops being UTF-8, e.g. "byte 0x82 on line 1 is not UTF-8" (pandas reports offsets
    within its read buffer, not the file)."""
    try:
        raw = path.read_bytes()
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        return f"byte 0x{raw[err.start]:02x} on line {line:,} is not UTF-8"
    except OSError:
        pass
    return "it does not decode as UTF-8"


def _index_rows(table: pd.DataFrame, csv_label: str) -> dict[str, int]:
    names = table["Image Index"].astype(str)
    duplicated = names[names.duplicated()]
    if len(duplicated):
        raise UserError(f"{csv_label} lists image {duplicated.iloc[0]!r} more than once")
    return {name: i for i, name in enumerate(names)}


def _rows_for(names: list[str], row_of: dict[str, int], list_path: Path, csv_label: str) -> np.ndarray:
    missing = [n for n in names if n not in row_of]
    if missing:
        raise UserError(f"{len(missing)} image(s) in {list_path} are not in {csv_label}, e.g. {missing[0]!r}")
    return np.array(sorted(row_of[n] for n in names), dtype=np.int64)


def _filter_views(rows: np.ndarray, views: np.ndarray, wanted: str, split: str) -> np.ndarray:
    if wanted in ("all", "frontal"):  # NIH's images are all frontal (PA or AP)
        return rows
    kept = rows[views[rows] == wanted]
    if len(kept) == 0:
        raise UserError(f"no {wanted} images left in the {split} split; try --views all")
    return kept


def _present(rows: np.ndarray, names: np.ndarray, found: FoundImages) -> np.ndarray:
    return rows[np.fromiter((n in found.files for n in names[rows]), dtype=bool, count=len(rows))]


def _missing_message(
    name: str, root: Path, listed: dict[str, np.ndarray], missing: dict[str, int], found: FoundImages
) -> str:
    total = sum(len(v) for v in listed.values())
    per_split = ", ".join(f"{k} {missing[k]:,} of {len(listed[k]):,}" for k in SPLIT_NAMES)
    return (
        f"{name}: {sum(missing.values()):,} of {total:,} listed images are missing ({per_split}); "
        f"{found.where()}; fetch the missing archives or pass --allow-missing to train on the images present"
    )


def drop_unreadable(
    present: dict[str, np.ndarray], names: np.ndarray, cache: ImageCache
) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    bad = {str(n) for n, s in zip(cache.names.tolist(), cache.status.tolist()) if s == UNREADABLE}
    kept, unreadable = {}, {}
    for k, rows in present.items():
        is_bad = np.fromiter((n in bad for n in names[rows]), dtype=bool, count=len(rows))
        kept[k] = rows[~is_bad]
        unreadable[k] = sorted(names[rows[is_bad]].tolist())
    return kept, unreadable


def unreadable_message(name: str, unreadable: dict[str, list[str]], cache: ImageCache) -> str:
    files = sorted(n for v in unreadable.values() for n in v)
    shown = "; ".join(f"{n} ({cache.errors.get(n, 'unreadable')})" for n in files[:_NAMES_SHOWN])
    more = f" and {len(files) - _NAMES_SHOWN:,} more" if len(files) > _NAMES_SHOWN else ""
    return (
        f"{name}: {len(files):,} image file(s) cannot be read: {shown}{more}; "
        "replace them or pass --allow-missing to skip them"
    )


def _describe(
    root: Path,
    csv_label: str,
    splits: dict[str, Split],
    request: DataRequest,
    cache: ImageCache,
    listed: dict[str, np.ndarray],
    missing: dict[str, int],
    unreadable: dict[str, list[str]],
) -> dict[str, Any]:
    return {
        "source": str(root.resolve()),
        "csv": Path(csv_label.split(" (")[0]).name,
        **describe_splits(splits, request, cache, listed, missing, unreadable),
        "val_fraction": request.val_fraction,
    }


def describe_splits(
    splits: dict[str, Split],
    request: DataRequest,
    cache: ImageCache,
    listed: dict[str, np.ndarray],
    missing: dict[str, int],
    unreadable: dict[str, list[str]],
) -> dict[str, Any]:
    """What every dataset read from files records with each run: per split its images, patients, positives
    (and labelled images, where labels can be missing), what was listed, missing or unreadable, the request's
    data settings, the cache and the data's fingerprint."""
    info: dict[str, Any] = {
        "images": {k: len(s) for k, s in splits.items()},
        "patients": {k: int(len(np.unique(s.patient_ids))) for k, s in splits.items()},
        "positives": {k: dict(zip(TASK_NAMES, positives(s.labels).tolist())) for k, s in splits.items()},
    }
    if any(has_missing(s.labels) for s in splits.values()):
        info["labelled"] = {
            k: dict(zip(TASK_NAMES, labelled(s.labels).sum(axis=0).tolist())) for k, s in splits.items()
        }
    return info | {
        "listed": {k: int(len(v)) for k, v in listed.items()},
        "missing": missing,
        "unreadable": {k: len(v) for k, v in unreadable.items()},
        "unreadable_files": sorted(n for v in unreadable.values() for n in v)[:20],
        "allow_missing": request.allow_missing,
        "data_seed": request.data_seed,
        "views": request.views,
        "image_size": request.image_size,
        "cache": str(cache.folder),
        "cache_fingerprint": cache.fingerprint,
        "fingerprint": fingerprint(splits, cache.fingerprint),
    }


def fingerprint(splits: dict[str, Split], pixels_fingerprint: str = "") -> str:
    """Short sha1 over each split's sorted image names and label rows, and the pixel source's fingerprint."""
    digest = hashlib.sha1(pixels_fingerprint.encode())
    for key in SPLIT_NAMES:
        split = splits[key]
        order = np.argsort(split.image_ids.astype(str), kind="stable")
        digest.update(key.encode())
        digest.update("\n".join(split.image_ids.astype(str)[order]).encode())
        digest.update(np.ascontiguousarray(split.labels[order]).tobytes())
    return digest.hexdigest()[:16]
