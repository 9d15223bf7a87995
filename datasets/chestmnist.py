"""chestmnist: ChestMNIST of MedMNIST v2 (Yang et al., Scientific Data 2023), read with `medmnist`.

NIH ChestX-ray14 resized to 28, 64, 128 or 224 px, with the official split (78,468 train /
11,219 val / 22,433 test). `--data-dir` holds `chestmnist.npz` (28 px) or `chestmnist_{64,128,224}.npz`;
`--download` lets medmnist fetch it. Other image sizes are area-resized from the next larger
file (32 px from the 64 px file). Images go into the same image cache as NIH ChestX-ray14.

ChestMNIST carries no patient IDs or view positions: each image stands for its own patient
(MedMNIST's test split is NIH's official, patient-disjoint test list) and `--views` must be all.
"""

from __future__ import annotations

import hashlib
import threading
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory, Split
from mtlbench.datasets.decode import resize_arrays
from mtlbench.datasets.image_cache import ImageCache, ensure_cache, spot_check
from mtlbench.datasets.nih_layout import CACHE_DIR, SPLIT_NAMES, fingerprint
from mtlbench.datasets.split_checks import label_warnings
from mtlbench.errors import UserError, one_line
from mtlbench.registry import register_dataset
from mtlbench.tasks import TASK_NAMES

DATASET_NAME = "chestmnist"
MEDMNIST_FLAG = "chestmnist"
NATIVE_SIZES: tuple[int, ...] = (28, 64, 128, 224)
OFFICIAL_COUNTS = {"train": 78_468, "val": 11_219, "test": 22_433}
REDOWNLOAD = "delete it and download it again (--download)"


def npz_name(native_size: int) -> str:
    """The MedMNIST file name of one resolution: chestmnist.npz (28 px) or chestmnist_<size>.npz."""
    return f"{MEDMNIST_FLAG}.npz" if native_size == 28 else f"{MEDMNIST_FLAG}_{native_size}.npz"


def native_size_for(image_size: int) -> int:
    """The MedMNIST resolution a run at `image_size` reads: that size, else the next larger one."""
    larger = [s for s in NATIVE_SIZES if s >= image_size]
    if not larger:
        raise UserError(f"--image-size {image_size} is larger than ChestMNIST's largest file (224 px)")
    return larger[0]


def task_order() -> np.ndarray:
    """Column of each of TASK_NAMES in ChestMNIST's label vector (from medmnist's own INFO)."""
    from medmnist import INFO

    labels = INFO[MEDMNIST_FLAG]["label"]
    theirs = [labels[str(i)] for i in range(len(labels))]
    order = []
    for task in TASK_NAMES:
        key = task.lower().replace("_", " ")
        match = [i for i, name in enumerate(theirs) if key == name or key.split()[0] == name]
        if len(match) != 1:
            raise UserError(f"cannot map ChestMNIST's labels {theirs} to the task {task!r}")
        order.append(match[0])
    if sorted(order) != list(range(len(TASK_NAMES))):
        raise UserError(f"ChestMNIST's labels {theirs} do not map one-to-one onto the 14 tasks")
    return np.array(order)


@register_dataset(DATASET_NAME)
def load_chestmnist(request: DataRequest, progress: ProgressFactory) -> DatasetBundle:
    """ChestMNIST from `request.data_dir`, official split, through the image cache."""
    if request.views != "all":
        raise UserError("chestmnist has no view positions; use --views all")
    native = native_size_for(request.image_size)
    data_dir = Path(request.data_dir)
    path = data_dir / npz_name(native)
    if request.download and not path.is_file():
        _download(data_dir, native)
    if not path.is_file():
        used_for = (
            f" (used for --image-size {request.image_size}, area-resized)" if native != request.image_size else ""
        )
        raise UserError(
            f"chestmnist: {path} not found{used_for}; put {npz_name(native)} there, "
            "pass --data-dir to the folder that holds it, or add --download"
        )
    labels = _check_npz(path, native)
    source = NpzSource.of(path, {k: len(v) for k, v in labels.items()})
    cache_root = request.cache_dir if request.cache_dir is not None else data_dir / CACHE_DIR
    cache = ensure_cache(source, request.image_size, Path(cache_root), progress, build=request.build_cache)
    splits, start = {}, 0
    order = task_order()
    for split in SPLIT_NAMES:
        n = len(labels[split])
        ids = np.array(source.names[start : start + n])
        splits[split] = Split(
            cache.pixels, np.arange(start, start + n, dtype=np.int64), labels[split][:, order], ids, ids
        )
        start += n
    info = _describe(path, native, request, splits, cache)
    info["warnings"] = label_warnings(DATASET_NAME, splits)
    if request.spot_check:
        info["spot_check"] = {
            "checked": request.spot_check,
            "mismatched": spot_check(cache, source, request.spot_check),
        }
    return DatasetBundle(DATASET_NAME, splits["train"], splits["val"], splits["test"], info)


@dataclass
class NpzSource:
    """The image cache's source for ChestMNIST: the three image arrays of one npz, read on first use."""

    dataset: str
    path: Path
    names: tuple[str, ...]
    fingerprint: str
    use_processes: bool = False  # resizing in-memory arrays: threads suffice
    _images: dict[str, np.ndarray] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def of(cls, path: Path, counts: dict[str, int]) -> "NpzSource":
        """Names train-000000 … test-022432; fingerprint from the file's size and its first and last MiB."""
        names = tuple(f"{split}-{i:06d}" for split in SPLIT_NAMES for i in range(counts[split]))
        return cls(DATASET_NAME, path, names, _file_fingerprint(path))

    def job(self, start: int, stop: int, size: int) -> tuple[Any, tuple[Any, ...]]:
        """Resize rows start..stop (rows of train, then val, then test)."""
        pieces, offset = [], 0
        for images in self.images().values():
            lo, hi = max(start - offset, 0), min(stop - offset, len(images))
            if lo < hi:
                pieces.append(images[lo:hi])
            offset += len(images)
        return resize_arrays, (np.concatenate(pieces), size)

    def images(self) -> dict[str, np.ndarray]:
        """{split: (N, S, S) uint8}, read once with medmnist (only when a cache is built or checked)."""
        with self._lock:
            if self._images is None:
                self._images = _read_images(self.path)
            return self._images


def _read_images(path: Path) -> dict[str, np.ndarray]:
    from medmnist import ChestMNIST

    native = int(path.stem.rsplit("_", 1)[-1]) if "_" in path.stem else 28
    images = {}
    for split in SPLIT_NAMES:
        try:
            images[split] = np.asarray(ChestMNIST(split=split, root=str(path.parent), size=native).imgs)
        except (KeyError, ValueError, OSError, RuntimeError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise UserError(
                f"chestmnist: cannot read {path} with medmnist ({type(err).__name__}: {one_line(err)}); {REDOWNLOAD}"
            ) from None
        got = images[split]
        if got.dtype != np.uint8 or got.shape[1:] != (native, native) or got.ndim != 3:
            raise UserError(
                f"chestmnist: {path} holds {split}_images of {got.dtype} {got.shape}, "
                f"expected uint8 (N, {native}, {native}); is it the right file?"
            )
    return images


def _check_npz(path: Path, native: int) -> dict[str, np.ndarray]:
    """Check the whole file before any cache is started; return {split: (N, 14) uint8 labels}.

    Labels are read in full; of the images only each array's header (dtype and shape), which
    costs no decompression, so a wrong or truncated file is refused in a moment whatever its size.
    """
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"chestmnist: cannot read {path}: not a zip file (an interrupted or failed download?); {REDOWNLOAD}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            headers = {
                info.filename[: -len(".npy")]: _npy_header(archive, info)
                for info in archive.infolist()
                if info.filename.endswith(".npy")
            }
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise UserError(
            f"chestmnist: cannot read {path} ({type(err).__name__}: {one_line(err)}); {REDOWNLOAD}"
        ) from None
    for split in SPLIT_NAMES:
        for key in (f"{split}_images", f"{split}_labels"):
            if key not in headers:
                raise UserError(
                    f"chestmnist: {path} has no {key!r} (keys: {', '.join(sorted(headers)) or 'none'}); "
                    f"is it a ChestMNIST file? MedMNIST's {path.name} holds {{train,val,test}}_{{images,labels}}"
                )
    for split in SPLIT_NAMES:
        shape, dtype = headers[f"{split}_images"]
        if dtype != np.uint8 or len(shape) != 3 or shape[1:] != (native, native):
            raise UserError(
                f"chestmnist: {path} holds {split}_images of {dtype} {shape}, "
                f"expected uint8 (N, {native}, {native}); is it the right file?"
            )
    labels = {split: _labels(path, split) for split in SPLIT_NAMES}
    for split in SPLIT_NAMES:
        count = headers[f"{split}_images"][0][0]
        if count != len(labels[split]):
            raise UserError(
                f"chestmnist: {path} holds {count:,} {split}_images but {len(labels[split]):,} {split}_labels; "
                f"the file is damaged; {REDOWNLOAD}"
            )
    empty = [split for split in SPLIT_NAMES if not len(labels[split])]
    if empty:  # an empty val split would fail only after a whole training epoch
        held = ", ".join(f"{len(labels[s]):,} {s}" for s in SPLIT_NAMES)
        raise UserError(
            f"chestmnist: {path} holds no {' and no '.join(empty)} images ({held}); training needs all three "
            f"splits (MedMNIST's file holds {', '.join(f'{n:,} {s}' for s, n in OFFICIAL_COUNTS.items())}); "
            f"{REDOWNLOAD}"
        )
    return labels


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of one .npy member, read from its header alone."""
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return tuple(int(n) for n in shape), dtype


def _labels(path: Path, split: str) -> np.ndarray:
    """(N, 14) uint8 labels of one split in ChestMNIST's own column order, checked."""
    key = f"{split}_labels"
    try:
        with np.load(path) as npz:
            if key not in npz.files:
                raise UserError(
                    f"chestmnist: {path} has no {key!r} (keys: {', '.join(npz.files)}); is it a ChestMNIST file?"
                )
            labels = npz[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise UserError(
            f"chestmnist: cannot read {path} ({type(err).__name__}: {one_line(err)}); {REDOWNLOAD}"
        ) from None
    if labels.ndim != 2 or labels.shape[1] != len(TASK_NAMES):
        raise UserError(
            f"chestmnist: {path} {key} has shape {labels.shape}; expected (N, 14) of 0/1, one column per finding; "
            "is it a ChestMNIST file?"
        )
    if not np.isin(labels, (0, 1)).all():
        odd = labels[~np.isin(labels, (0, 1))].ravel()[0]
        raise UserError(
            f"chestmnist: {path} {key} holds the value {odd.item()!r} where only 0 and 1 belong; "
            "is it a ChestMNIST file?"
        )
    return labels.astype(np.uint8)


def _download(data_dir: Path, native: int) -> None:
    from medmnist import ChestMNIST

    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        ChestMNIST(split="test", root=str(data_dir), size=native, download=True)
    except Exception as err:  # network errors come in many types; all mean the same to the user
        raise UserError(
            f"chestmnist: download of {npz_name(native)} into {data_dir} failed ({type(err).__name__}: {err}); "
            "fetch it by hand from MedMNIST's Zenodo record"
        ) from None


def _file_fingerprint(path: Path) -> str:
    digest = hashlib.sha1()
    size = path.stat().st_size
    digest.update(f"{path.name}\t{size}\n".encode())
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))
        f.seek(max(size - (1 << 20), 0))
        digest.update(f.read(1 << 20))
    return digest.hexdigest()[:16]


def _describe(
    path: Path, native: int, request: DataRequest, splits: dict[str, Split], cache: ImageCache
) -> dict[str, Any]:
    counts = {k: len(s) for k, s in splits.items()}
    return {
        "source": str(path.resolve()),
        "file": path.name,
        "native_size": native,
        "image_size": request.image_size,
        "images": counts,
        "official_counts": counts == OFFICIAL_COUNTS,
        "patients": "not provided by ChestMNIST: each image is its own patient id",
        "positives": {k: dict(zip(TASK_NAMES, s.labels.sum(axis=0).tolist())) for k, s in splits.items()},
        "split": "official MedMNIST split (val_fraction and data_seed unused)",
        "cache": str(cache.folder),
        "cache_fingerprint": cache.fingerprint,
        "fingerprint": fingerprint(splits, cache.fingerprint),
    }
