"""Reading a dataset whose metadata table lists every image by its path (CheXpert, MIMIC-CXR-JPG,
PadChest): what the dataset modules share once each has parsed its own table.

A dataset module turns its files into an `ImageTable` (one row per image: its path under the root,
patient, view, labels with NaN where missing, and the split it belongs to); `read_table_layout`
then keeps the requested views, finds the files, decodes them once into the image cache
(datasets/image_cache.py), drops what is absent or unreadable (or refuses, without
`--allow-missing`) and returns the splits with the provenance every run stores.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory, Split
from mtlbench.datasets.image_cache import ensure_cache, spot_check
from mtlbench.datasets.nih_layout import (
    CACHE_DIR,
    PROCESS_POOL_BYTES,
    SPLIT_NAMES,
    PngSource,
    check_patient_disjoint,
    describe_splits,
    drop_unreadable,
    unreadable_message,
)
from mtlbench.datasets.split_checks import label_warnings
from mtlbench.errors import UserError, one_line

FRONTAL_VIEWS = ("PA", "AP")
_SHOWN = 3


@dataclass(frozen=True)
class ImageTable:
    """A dataset's images as its metadata lists them, one entry per image, in the table's order."""

    image_ids: np.ndarray  # (N,) str: the path under the dataset root, unique
    patient_ids: np.ndarray  # (N,) str
    views: np.ndarray  # (N,) str: "PA", "AP", "LATERAL", ... (upper case)
    labels: np.ndarray  # (N, T) float32 in TASK_NAMES order, NaN where missing
    splits: np.ndarray  # (N,) str: "train", "val" or "test"

    def __post_init__(self) -> None:
        n = len(self.image_ids)
        if not all(len(a) == n for a in (self.patient_ids, self.views, self.labels, self.splits)):
            raise ValueError("every column of an ImageTable has one entry per image")
        unknown = set(np.unique(self.splits).tolist()) - set(SPLIT_NAMES)
        if unknown:
            raise ValueError(f"unknown split names {sorted(unknown)}")


def resolve_under(root: Path, relative: str, where: str) -> Path:
    """`root / relative`, refused (one line naming `where`) when it is absolute or leaves `root` with `..`."""
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts or not parts:
        raise UserError(
            f"{where}: image path {relative!r} points outside the dataset folder {root}; the table must list "
            "paths under it (restore the table from the download)"
        )
    return root.joinpath(*parts)


def read_csv_table(path: Path, columns: tuple[str, ...], fix: str, dtype: dict[str, Any] | None = None) -> pd.DataFrame:
    """A metadata CSV (plain or .gz) that must hold `columns` and at least one row; anything else is a one-line
    UserError naming the file and ending with `fix` (what to do about it)."""
    try:
        table = pd.read_csv(path, dtype=dtype, low_memory=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path} is empty (no header, no rows); {fix}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as err:
        raise UserError(f"cannot read {path} as CSV ({one_line(err)}); {fix}") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(map(repr, missing))}; {fix}")
    if table.empty:
        raise UserError(f"{path} has a header but no rows; {fix}")
    return table


def carve_patients(rows: np.ndarray, patients: np.ndarray, fraction: float, seed: int, stream: int) -> np.ndarray:
    """The rows (of `rows`) of a seeded `fraction` of their patients: a split carved by patient."""
    unique = np.unique(patients[rows])
    if len(unique) < 2:
        raise UserError("fewer than 2 patients: cannot carve a split by patient from them")
    n = int(np.clip(round(fraction * len(unique)), 1, len(unique) - 1))
    chosen = unique[np.random.default_rng([seed, stream]).permutation(len(unique))[:n]]
    return rows[np.isin(patients[rows], chosen)]


def read_table_layout(
    name: str, root: Path, table: ImageTable, request: DataRequest, progress: ProgressFactory, info: dict[str, Any]
) -> DatasetBundle:
    """The splits of `table` backed by the image cache; `info` (the dataset's own provenance) is extended
    with what every dataset records (counts, labelled images, missing and unreadable files, fingerprint)."""
    check_patient_disjoint(
        {k: np.flatnonzero(table.splits == k) for k in SPLIT_NAMES}, np.asarray(table.patient_ids, dtype=object)
    )
    listed = {
        k: _keep_views(np.flatnonzero(table.splits == k), table.views, request.views, name, k) for k in SPLIT_NAMES
    }
    ids = table.image_ids.astype(str)
    sizes = _file_sizes(root, ids[np.concatenate(list(listed.values()))])
    present = {k: rows[np.fromiter((ids[r] in sizes for r in rows), bool, len(rows))] for k, rows in listed.items()}
    missing = {k: int(len(listed[k]) - len(present[k])) for k in SPLIT_NAMES}
    if sum(missing.values()) and not request.allow_missing:
        gone = [ids[r] for k in SPLIT_NAMES for r in listed[k] if ids[r] not in sizes][:_SHOWN]
        per_split = ", ".join(f"{k} {missing[k]:,} of {len(listed[k]):,}" for k in SPLIT_NAMES)
        raise UserError(
            f"{name}: {sum(missing.values()):,} listed images are missing under {root} ({per_split}; e.g. "
            f"{', '.join(gone)}); fetch them or pass --allow-missing to train on the images present"
        )
    empty = [k for k in SPLIT_NAMES if not len(present[k])]
    if empty:
        raise UserError(f"{name}: no image of the {', '.join(empty)} split is present under {root}")
    names = sorted(sizes)
    digest = hashlib.sha1("".join(f"{n}\t{sizes[n]}\n" for n in names).encode()).hexdigest()[:16]
    paths = tuple(str(root / n) for n in names)
    source = PngSource(name, tuple(names), paths, digest, sum(sizes.values()) > PROCESS_POOL_BYTES)
    cache_root = request.cache_dir if request.cache_dir is not None else root / CACHE_DIR
    cache = ensure_cache(source, request.image_size, Path(cache_root), progress, build=request.build_cache)
    split_rows, unreadable = drop_unreadable(present, ids, cache)
    if sum(len(v) for v in unreadable.values()) and not request.allow_missing:
        raise UserError(unreadable_message(name, unreadable, cache))
    row_of = cache.row_of()
    splits = {
        k: Split(
            pixels=cache.pixels,
            rows=np.array([row_of[n] for n in ids[rows]], dtype=np.int64),
            labels=np.ascontiguousarray(table.labels[rows], dtype=np.float32),
            image_ids=ids[rows],
            patient_ids=np.asarray(table.patient_ids)[rows].astype(str),
        )
        for k, rows in split_rows.items()
    }
    info = {
        **info,
        "source": str(root.resolve()),
        **describe_splits(splits, request, cache, listed, missing, unreadable),
        "warnings": info.get("warnings", []) + label_warnings(name, splits),
    }
    if request.spot_check:
        info["spot_check"] = {
            "checked": request.spot_check,
            "mismatched": spot_check(cache, source, request.spot_check),
        }
    return DatasetBundle(name=name, train=splits["train"], val=splits["val"], test=splits["test"], info=info)


def read_table_dataset(
    name: str,
    root: Path,
    request: DataRequest,
    progress: ProgressFactory,
    make_table: Callable[[Path, DataRequest], tuple[ImageTable, dict[str, Any]]],
) -> DatasetBundle:
    """The dataset at `root` whose files `make_table(root, request)` turns into an ImageTable and its provenance."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{name}: dataset folder {root} does not exist; pass --data-dir pointing to it")
    table, info = make_table(root, request)
    return read_table_layout(name, root, table, request, progress, info)


def _keep_views(rows: np.ndarray, views: np.ndarray, wanted: str, name: str, split: str) -> np.ndarray:
    """`rows` of the requested views: all, frontal (PA and AP), PA or AP."""
    if wanted == "all":
        return rows
    keep = FRONTAL_VIEWS if wanted == "frontal" else (wanted,)
    kept = rows[np.isin(views[rows], keep)]
    if len(kept) == 0 and len(rows):
        raise UserError(f"{name}: no {wanted} images left in the {split} split; try --views all")
    return kept


def _file_sizes(root: Path, relative: np.ndarray) -> dict[str, int]:
    """{path under root: size in bytes} of the listed files that exist as regular files."""
    sizes = {}
    for rel in relative.tolist():
        try:
            st = os.stat(root / rel)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            sizes[rel] = st.st_size
    return sizes
