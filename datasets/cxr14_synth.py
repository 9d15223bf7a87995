"""cxr14-synth: an offline stand-in for NIH ChestX-ray14 with real labels and rendered images.

Labels, patient IDs, age, sex and view are real rows of the NIH metadata table that ships
with torchxrayvision, so prevalence (Hernia 0.2% ... Infiltration 17.7%) and co-occurrence
are those of the real dataset. Images are rendered procedurally: a radiograph-like chest
(body, lungs, heart, mediastinum, spine, ribs, clavicles, diaphragm, vessel markings) that
varies per patient and per exposure, plus one visual signature per finding. The eight
findings with NIH bounding boxes are placed at a sampled real box.

Label noise: the CSV keeps the real labels exactly. The image is rendered from a noisy copy:
each positive finding's signature is left out with probability SIGNATURE_DROP_RATE, and each
negative finding gets a spurious signature with probability SPURIOUS_RATE x its prevalence.

Images are displayed as radiographs are: the patient's left is the image's right, so the
heart sits right of centre. AP views get a magnified heart, lower lung volumes and more noise.
A patient's build (thorax, lungs, heart, ribs) is seeded by patient ID; positioning,
inspiration and exposure vary per image.

Difficulty per finding is set by FINDING_STRENGTH (1.0 = textbook-obvious signature).
Every image is a pure function of (seed, its metadata row, its rendered labels, size), so
the same request gives byte-identical PNGs whatever the chunking or thread count. Bump
GENERATOR_VERSION whenever rendering changes: cached datasets then regenerate.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import pandas as pd
from PIL import Image
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from mtlbench.datasets import image_cache
from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory
from mtlbench.datasets.nih_layout import (
    CACHE_DIR,
    CSV_NAMES,
    IMAGES_DIR,
    TEST_LIST,
    TRAIN_VAL_LIST,
    parse_finding_labels,
    read_nih_layout,
)
from mtlbench.datasets.nih_tables import BBOX_FILE, TABLE_FILE, TABLE_ROWS, nih_data_file, read_nih_table
from mtlbench.errors import UserError
from mtlbench.owned import remove_stale_partials
from mtlbench.registry import register_dataset
from mtlbench.tasks import TASK_NAMES

DATASET_NAME = "cxr14-synth"
GENERATOR_VERSION = 3  # 2: strengths ×1.6 (capped at 1) so the quick preset at 32 px learns;
# 3: float32 rendering throughout (pixels within ±1 of version 2, same anatomy and findings)
MIN_IMAGES = 50
MIN_SIZE, MAX_SIZE = 16, 1024
TEST_PATIENT_FRACTION = 0.2
SIGNATURE_DROP_RATE = 0.05
SPURIOUS_RATE = 0.05
COMPLETE_MARKER = ".complete"
PARTIAL_MARKER = ".generating"  # in a `<root>.partial-<pid>` folder from its first moment: it is ours to delete
SYNTH_JSON = "synth.json"

FINDING_STRENGTH: Mapping[str, float] = MappingProxyType(
    {
        "Atelectasis": 0.88,
        "Cardiomegaly": 1.00,
        "Effusion": 1.00,
        "Infiltration": 0.64,
        "Mass": 1.00,
        "Nodule": 0.80,
        "Pneumonia": 0.72,
        "Pneumothorax": 1.00,
        "Consolidation": 0.80,
        "Edema": 0.61,
        "Emphysema": 0.72,
        "Fibrosis": 0.72,
        "Pleural_Thickening": 0.88,
        "Hernia": 1.00,
    }
)
"""Signature strength per finding, 1.0 = textbook-obvious; the difficulty knob of the dataset.

Calibrated (version 2: version 1's values ×1.6, capped at 1) so that equal weighting in the
`quick` preset (32 px, 2,000 images, 3 epochs, sized so that all methods run in minutes on a
2-core CPU) lands clearly above chance, with the confusable opacities and small findings the
hardest; at 64 px and more epochs the easy findings approach, but do not reach, perfect AUROC.
"""

BBOX_TASK_NAMES: Mapping[str, str] = MappingProxyType({"Infiltrate": "Infiltration"})
"""BBox_List_2017 label → task name, where they differ."""

_PIXEL_BUDGET = 1 << 20  # pixels rendered at once; bounds memory at any image size
_BLOCK_PIXELS = 1 << 17  # pixels drawn at once within a chunk (see _render_chunk)
_MAX_THREADS = 8
_WRITE_THREADS = 4
_EDGE = 0.009  # soft edge width of anatomical outlines, in image widths


# ----------------------------------------------------------------------------- loading


@register_dataset(DATASET_NAME)
def load_cxr14_synth(request: DataRequest, progress: ProgressFactory) -> DatasetBundle:
    """Generate (once, cached under data_dir) and load the synthetic NIH-layout dataset."""
    check_request(request)
    root = dataset_root(request)
    if not request.build_cache and not _is_complete(
        root, generator_params(request.synth_images, request.image_size, request.data_seed)
    ):
        raise UserError(f"no generated {DATASET_NAME} at {root}; run `mtlbench data prepare` with the same options")
    try:
        ensure_generated(root, request.synth_images, request.image_size, request.data_seed, progress)
    except OSError as exc:  # read-only folder, disk full, ...: nothing half-written is kept
        raise UserError(
            f"cannot write the synthetic dataset under {request.data_dir} ({exc.strerror or exc}); "
            "pass --data-dir pointing to a writable folder with free space"
        ) from None
    bundle = read_nih_layout(root, request, progress, DATASET_NAME, fix_hint=f"delete {root} to generate it again")
    generator = json.loads((root / SYNTH_JSON).read_text())
    return dataclasses.replace(bundle, info={**bundle.info, "generator": generator})


def check_request(request: DataRequest) -> None:
    """UserError with a one-line fix unless the request is one cxr14-synth can serve."""
    if not MIN_IMAGES <= request.synth_images <= TABLE_ROWS:
        raise UserError(
            f"--synth-images must be between {MIN_IMAGES} and {TABLE_ROWS} "
            f"(the NIH table's rows), got {request.synth_images}"
        )
    if not MIN_SIZE <= request.image_size <= MAX_SIZE:
        raise UserError(
            f"--image-size must be between {MIN_SIZE} and {MAX_SIZE} for cxr14-synth, "
            f"got {request.image_size}"
        )
    if request.data_seed < 0:
        raise UserError(f"--data-seed must be 0 or more, got {request.data_seed}")


def dataset_root(request: DataRequest) -> Path:
    """Where the dataset for this request lives: data_dir/cxr14-synth/n{count}-px{size}-seed{seed}."""
    name = f"n{request.synth_images}-px{request.image_size}-seed{request.data_seed}"
    return Path(request.data_dir) / DATASET_NAME / name


# ----------------------------------------------------------------------------- real NIH tables


def sample_nih_rows(count: int, seed: int, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """`count` rows of the NIH table drawn without replacement (seeded), kept in table order."""
    table = read_nih_table(TABLE_FILE) if table is None else table
    if not 0 < count <= len(table):
        raise UserError(f"cannot sample {count} rows from a table of {len(table)}")
    rng = np.random.default_rng([seed, 0x5A3])
    rows = np.sort(rng.choice(len(table), size=count, replace=False))
    return table.iloc[rows].reset_index(drop=True)


def split_test_patients(rows: pd.DataFrame, seed: int) -> tuple[list[str], list[str]]:
    """(train_val names, test names): a seeded TEST_PATIENT_FRACTION of the patients is test."""
    patients = np.unique(rows["Patient ID"].to_numpy())
    n_test = int(np.clip(round(TEST_PATIENT_FRACTION * len(patients)), 1, len(patients) - 1))
    rng = np.random.default_rng([seed, 0x7E5])
    test_patients = patients[rng.permutation(len(patients))[:n_test]]
    in_test = np.isin(rows["Patient ID"].to_numpy(), test_patients)
    names = rows["Image Index"].astype(str).to_numpy()
    return names[~in_test].tolist(), names[in_test].tolist()


def read_nih_boxes() -> dict[str, np.ndarray]:
    """Real finding boxes per task name: (k, 4) arrays of centre x, centre y, w, h in image widths."""
    raw = pd.read_csv(nih_data_file(BBOX_FILE)).iloc[:, :6]
    raw.columns = ["image", "label", "x", "y", "w", "h"]
    xywh = raw[["x", "y", "w", "h"]].to_numpy(dtype=np.float64) / 1024.0
    centred = np.column_stack([xywh[:, 0] + xywh[:, 2] / 2, xywh[:, 1] + xywh[:, 3] / 2, xywh[:, 2:]])
    tasks = raw["label"].map(lambda label: BBOX_TASK_NAMES.get(label, label)).to_numpy()
    return {task: centred[tasks == task] for task in TASK_NAMES if (tasks == task).any()}


def prevalence(labels: np.ndarray) -> np.ndarray:
    """Fraction of positives per task column."""
    return labels.mean(axis=0) if len(labels) else np.zeros(labels.shape[1])


# ----------------------------------------------------------------------------- generation on disk


def ensure_generated(root: Path, count: int, size: int, seed: int, progress: ProgressFactory) -> Path:
    """Generate the dataset at `root` unless a complete one with the same parameters is there.

    Generation writes into a sibling `<root>.partial-<pid>` and renames it into place, so an
    interrupted run never leaves a folder that looks complete; partial folders of dead processes
    are removed. An existing `root` is replaced only if this generator wrote it and it holds
    nothing else (see `check_replaceable`).
    """
    params = generator_params(count, size, seed)
    if _is_complete(root, params):
        return root
    check_replaceable(root)
    remove_stale_partials(root.parent, f"{root.name}.partial-*", lambda folder: (folder / PARTIAL_MARKER).is_file())
    partial = root.with_name(f"{root.name}.partial-{os.getpid()}")
    try:
        partial.mkdir(parents=True)  # never an existing folder: one the generator did not mark is not ours
    except FileExistsError:
        raise UserError(f"{partial} is in the way of the {DATASET_NAME} generator and was not written by it; "
                        "move it away, or pass --data-dir elsewhere") from None
    try:
        (partial / PARTIAL_MARKER).write_text("a cxr14-synth generation in progress; deleted once it is done\n")
        write_layout(partial, count, size, seed, progress)
        (partial / PARTIAL_MARKER).unlink()
        (partial / COMPLETE_MARKER).write_text("ok\n")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if _is_complete(root, params):  # another process finished the same dataset first
        shutil.rmtree(partial, ignore_errors=True)
        return root
    if root.exists():
        try:
            check_replaceable(root)  # again: files may have been added while generating
        except UserError:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        shutil.rmtree(root)
    try:
        os.replace(partial, root)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not _is_complete(root, params):
            raise
    return root


def generator_params(count: int, size: int, seed: int) -> dict[str, Any]:
    """Everything that determines the generated files; stored as synth.json."""
    return {
        "generator": DATASET_NAME,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "count": count,
        "image_size": size,
        "test_patient_fraction": TEST_PATIENT_FRACTION,
        "signature_drop_rate": SIGNATURE_DROP_RATE,
        "spurious_rate": SPURIOUS_RATE,
        "strength": dict(FINDING_STRENGTH),
        "source_table": f"torchxrayvision/data/{TABLE_FILE}",
    }


def write_layout(target: Path, count: int, size: int, seed: int, progress: ProgressFactory) -> None:
    """Write a complete NIH layout (images, CSV, split lists, synth.json) into `target`."""
    table = read_nih_table(TABLE_FILE)
    rows = sample_nih_rows(count, seed, table)
    full_prevalence = prevalence(parse_finding_labels(table["Finding Labels"], TABLE_FILE))
    labels = parse_finding_labels(rows["Finding Labels"], TABLE_FILE)
    rendered = render_labels(labels, rows["Image Index"], seed, full_prevalence)
    train_val, test = split_test_patients(rows, seed)
    (target / IMAGES_DIR).mkdir(parents=True)
    advance = progress(f"generating {DATASET_NAME}", count)
    names = rows["Image Index"].astype(str).tolist()
    stream = _render_stream(rows, rendered, size, seed, FINDING_STRENGTH, read_nih_boxes())
    # File creation dominates at small sizes and overlaps well across threads.
    with ThreadPoolExecutor(max_workers=_WRITE_THREADS) as writer:
        for start, stop, images in stream:
            list(writer.map(_write_png, [target / IMAGES_DIR / n for n in names[start:stop]], images))
            advance(stop - start)
    rows.to_csv(target / CSV_NAMES[0], index=False)
    (target / TRAIN_VAL_LIST).write_text("".join(f"{n}\n" for n in train_val))
    (target / TEST_LIST).write_text("".join(f"{n}\n" for n in test))
    stats = {
        "label_positives": dict(zip(TASK_NAMES, labels.sum(axis=0).tolist())),
        "rendered_positives": dict(zip(TASK_NAMES, rendered.sum(axis=0).tolist())),
        "patients": int(rows["Patient ID"].nunique()),
    }
    params = generator_params(count, size, seed)
    (target / SYNTH_JSON).write_text(json.dumps({**params, "stats": stats}, indent=2) + "\n")


def _write_png(path: Path, image: np.ndarray) -> None:
    Image.fromarray(image, mode="L").save(path, format="PNG")


def _chunks(count: int, size: int) -> list[tuple[int, int]]:
    step = max(1, _PIXEL_BUDGET // (size * size))
    return [(start, min(start + step, count)) for start in range(0, count, step)]


def _is_complete(root: Path, params: dict[str, Any]) -> bool:
    if not (root / COMPLETE_MARKER).is_file() or not (root / SYNTH_JSON).is_file():
        return False
    try:
        stored = json.loads((root / SYNTH_JSON).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return all(stored.get(key) == value for key, value in params.items())


def check_replaceable(root: Path) -> None:
    """UserError unless `root` is absent, or a folder this generator wrote that holds only what
    generation and the image cache write there: it is about to be deleted and generated again."""
    if not os.path.lexists(root):
        return
    try:
        generator = json.loads((root / SYNTH_JSON).read_text()).get("generator")
    except (OSError, ValueError, AttributeError):
        generator = None
    if root.is_symlink() or not root.is_dir() or generator != DATASET_NAME:
        raise UserError(f"{root} is in the way of the {DATASET_NAME} dataset and was not written by its generator "
                        f"(no {SYNTH_JSON} of it); move it away, or pass --data-dir elsewhere")
    foreign = _foreign_entries(root)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
        raise UserError(f"{root} must be generated again, but holds {len(foreign)} file(s) the generator did not "
                        f"write ({shown}); move them out of it, or pass --data-dir elsewhere")


def _foreign_entries(root: Path) -> list[str]:
    known = {IMAGES_DIR, CSV_NAMES[0], TRAIN_VAL_LIST, TEST_LIST, SYNTH_JSON, COMPLETE_MARKER, CACHE_DIR}
    foreign = sorted(e.name for e in root.iterdir() if e.name not in known or e.is_symlink())
    images, cache = root / IMAGES_DIR, root / CACHE_DIR
    if images.is_dir() and not images.is_symlink():
        foreign += sorted(f"{IMAGES_DIR}/{e.name}" for e in images.iterdir()
                          if e.is_symlink() or not e.is_file() or not e.name.endswith(".png"))
    if cache.is_dir() and not cache.is_symlink():
        foreign += [f"{CACHE_DIR}/{name}" for name in image_cache.foreign_entries(cache)]
    return foreign


# ----------------------------------------------------------------------------- label noise


def render_labels(
    labels: np.ndarray, image_names: Any, seed: int, finding_prevalence: np.ndarray
) -> np.ndarray:
    """The noisy copy of `labels` that images are rendered from (see the module docstring)."""
    draws = _Draws(seed, image_keys(image_names))
    rendered = np.zeros(labels.shape, dtype=bool)
    for t, task in enumerate(TASK_NAMES):
        u = draws.uniform(f"label.{task}")
        positive = labels[:, t].astype(bool)
        rendered[:, t] = np.where(
            positive, u >= SIGNATURE_DROP_RATE, u < SPURIOUS_RATE * finding_prevalence[t]
        )
    return rendered


# ----------------------------------------------------------------------------- deterministic draws


def image_keys(image_names: Any) -> np.ndarray:
    """A 64-bit key per image name (stable across runs and platforms)."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(str(n).encode(), digest_size=8).digest(), "little") for n in image_names],
        dtype=np.uint64,
    )


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class _Draws:
    """Random numbers that are a hash of (seed, key, stream name): one value per key."""

    seed: int
    keys: np.ndarray

    @functools.cached_property
    def _mixed(self) -> np.ndarray:
        """The (seed, key) part of the hash, shared by every stream."""
        base = _splitmix(np.array([self.seed], dtype=np.uint64))
        return _splitmix(base ^ self.keys.astype(np.uint64))

    def uniform(self, stream: str, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        h = _splitmix(self._mixed ^ np.uint64(zlib.crc32(stream.encode())))
        u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
        return low + (high - low) * u

    def normal(self, stream: str, sd: float = 1.0, clip: float = 3.0) -> np.ndarray:
        u1 = self.uniform(stream + "/a")
        u2 = self.uniform(stream + "/b")
        z = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
        return sd * np.clip(z, -clip, clip)

    def chance(self, stream: str, p: float | np.ndarray) -> np.ndarray:
        return self.uniform(stream) < p

    def take(self, idx: np.ndarray | slice) -> "_Draws":
        taken = _Draws(self.seed, self.keys[idx])
        if "_mixed" in self.__dict__:
            taken.__dict__["_mixed"] = self._mixed[idx]
        return taken


def _col(values: Any) -> np.ndarray:
    """(B,) values → (B, 1, 1) float32, to broadcast against (B, H, W) images."""
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


# Rendering keeps every (B, H, W) array float32 and works in place where it can: on a 2-core
# CPU each pass over a chunk is memory-bound, so passes (and float64 temporaries) set the speed.
# Python floats and float32 arrays stay float32; bool arrays and numpy float64 scalars would not.


def _smoothstep_(t: np.ndarray) -> np.ndarray:
    """In place: t clipped to [0, 1], then 3t² − 2t³."""
    np.clip(t, 0, 1, out=t)
    square = t * t
    t *= -2
    t += 3
    t *= square
    return t


def _exp_(x: np.ndarray) -> np.ndarray:
    """In place: exp(x) for x ≤ 0, with x clamped at −70 first.

    exp(−70) ≈ 4e−31 stands in for anything smaller, a difference far below float32 image
    precision; without the clamp exp returns subnormal numbers, several times slower to make
    and to use.
    """
    np.maximum(x, -70, out=x)
    return np.exp(x, out=x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """A logistic-like step (slope 1/4 at 0) that is exactly 0 / 1 beyond |x| = 3; cheap."""
    t = np.multiply(x, np.float32(1 / 6), dtype=np.float32)
    t += np.float32(0.5)
    return _smoothstep_(t)


def _step(x: np.ndarray, centre: Any, width: Any, out: np.ndarray | None = None) -> np.ndarray:
    """_sigmoid((x - centre) / width) in one affine pass; centre, width: floats or (B, 1, 1) float32.

    A negative width flips the step: _step(x, c, -w) is _sigmoid((c - x) / w). `out` may be x.
    """
    scale = 1 / (6 * width)
    t = np.multiply(x, scale, out=out, dtype=np.float32)
    t += 0.5 - centre * scale
    return _smoothstep_(t)


# ----------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Scene:
    """A block of images in the patient's frame: grids, anatomy and fields, all (B, H, W)."""

    U: np.ndarray  # horizontal position from the midline, -0.5 = image left (patient's right)
    Y: np.ndarray  # vertical position, 0 = top
    geo: dict[str, np.ndarray]  # per-image anatomy, each (B, 1, 1)
    lung: np.ndarray  # soft lung mask, heart excluded
    rim: np.ndarray  # distance inside the lung from its lateral/apical border
    fields: dict[str, np.ndarray]  # per-image low-resolution noise grids (B, g, g)
    draws: _Draws
    size: int

    def dx(self, cx: np.ndarray) -> np.ndarray:
        """X − cx, for a horizontal image position cx (0 = image left), (B, 1, 1)."""
        return self.U - (cx - np.float32(0.5))

    def take(self, idx: np.ndarray) -> "_Scene":
        return _Scene(
            U=self.U[idx], Y=self.Y[idx], geo={k: v[idx] for k, v in self.geo.items()},
            lung=self.lung[idx], rim=self.rim[idx], fields={k: v[idx] for k, v in self.fields.items()},
            draws=self.draws.take(idx), size=self.size,
        )

    def field(self, name: str) -> np.ndarray:
        """Low-resolution noise grid `name` smoothly upsampled to the image, unit variance."""
        low = self.fields[name]
        k = _upsampler(self.size, low.shape[-1])
        return k @ low @ k.T


def render_images(
    rows: pd.DataFrame,
    rendered: np.ndarray,
    size: int,
    seed: int,
    strength: Mapping[str, float] = FINDING_STRENGTH,
    boxes: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Render (N, size, size) uint8 radiographs for NIH metadata rows.

    `rendered` (N, 14) says which finding signatures to draw (see render_labels); `rows` needs
    Image Index, Patient ID, Patient Age, Patient Gender (or Sex) and View Position.
    """
    boxes = read_nih_boxes() if boxes is None else boxes
    out = np.empty((len(rows), size, size), dtype=np.uint8)
    for start, stop, images in _render_stream(rows, rendered, size, seed, strength, boxes):
        out[start:stop] = images
    return out


def _render_stream(
    rows: pd.DataFrame, rendered: np.ndarray, size: int, seed: int,
    strength: Mapping[str, float], boxes: Mapping[str, np.ndarray],
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(start, stop, images) per chunk, in order; chunks render on worker threads.

    numpy releases the GIL inside large array operations, so threads use every core; at most
    a few chunks are held in memory ahead of the consumer. BLAS is held to one thread meanwhile
    (process-wide, until the stream ends): chunks already use every core, and BLAS threads in
    each chunk's small noise-field products only oversubscribe them (on the 2-core development
    machine, with another process busy, they ran ~25x slower).
    """
    workers = max(1, min(_MAX_THREADS, os.cpu_count() or 1))
    chunks = iter(_chunks(len(rows), size))
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=workers) as pool:
        ahead: deque = deque()
        while True:
            while len(ahead) <= workers and (chunk := next(chunks, None)) is not None:
                start, stop = chunk
                job = pool.submit(_render_chunk, rows.iloc[start:stop], rendered[start:stop], size, seed, strength, boxes)
                ahead.append((start, stop, job))
            if not ahead:
                return
            start, stop, job = ahead.popleft()
            yield start, stop, job.result()


def _render_chunk(
    rows: pd.DataFrame, has: np.ndarray, size: int, seed: int,
    strength: Mapping[str, float], boxes: Mapping[str, np.ndarray],
) -> np.ndarray:
    """Images for a chunk: per-image draws for all rows at once, then pixels a block at a time.

    A block is about _BLOCK_PIXELS pixels: its (B, H, W) float32 temporaries (1 MiB each) mostly
    stay in the CPU cache, and each numpy call on them still runs long enough that render threads
    seldom wait on each other for the GIL between calls.
    """
    keys = image_keys(rows["Image Index"])
    draws = _Draws(seed, keys)
    patient = _Draws(seed, rows["Patient ID"].to_numpy().astype(np.uint64) ^ np.uint64(0xA5A5_0000_0000))
    geo = _anatomy(rows, patient, draws)
    _apply_shape_findings(geo, has, draws, strength, boxes)
    film = _film(geo, draws)
    pixel_noise, fields = _noise(keys, seed, size)
    images = np.empty(pixel_noise.shape, dtype=np.uint8)
    step = max(1, _BLOCK_PIXELS // (size * size))
    for start in range(0, len(keys), step):
        block = slice(start, start + step)
        scene, base, markings = _draw_anatomy(
            {k: v[block] for k, v in geo.items()}, {k: v[block] for k, v in fields.items()},
            draws.take(block), size,
        )
        for task, paint in _LESIONS.items():
            idx = np.flatnonzero(has[block, TASK_NAMES.index(task)])
            if idx.size:
                add, keep_markings = paint(scene.take(idx), strength[task], boxes.get(task))
                base[idx] += add
                if keep_markings is not None:
                    markings[idx] *= keep_markings
        base += markings
        image = _expose(base, pixel_noise[block], {k: v[block] for k, v in film.items()})
        image *= 255
        images[block] = np.rint(image, out=image)
    return images


def _anatomy(rows: pd.DataFrame, patient: _Draws, image: _Draws) -> dict[str, np.ndarray]:
    """Per-image anatomy: patient-constant build plus per-exposure positioning and inspiration."""
    sex_column = "Patient Gender" if "Patient Gender" in rows.columns else "Patient Sex"
    female = (rows[sex_column].astype(str).str.upper().str[:1] == "F").to_numpy()
    age = np.clip(rows["Patient Age"].to_numpy(dtype=np.float64), 0, 100)
    ap = (rows["View Position"].astype(str) == "AP").to_numpy()
    build = np.where(female, 0.95, 1.0) * (1 + patient.normal("thorax", 0.045))
    inspiration = image.normal("inspiration", 0.015) - 0.035 * ap
    magnify = 1 + 0.11 * ap  # AP: heart farther from the detector looks larger
    heart = 1 + patient.normal("heart", 0.065)
    geo = {
        "thorax": 0.345 * build,
        "lung_top": 0.125 + patient.normal("lung_top", 0.012),
        "lung_base": 0.80 + patient.normal("lung_base", 0.018) + inspiration,
        "dome": 0.075 + patient.normal("dome", 0.012),
        "mediastinum": 0.048 + patient.normal("mediastinum", 0.005),
        "heart_x": 0.545 + patient.normal("heart_x", 0.010),
        "heart_y": 0.64 + patient.normal("heart_y", 0.014) + 0.4 * inspiration,
        "heart_a": 0.145 * heart * magnify * build,
        "heart_b": 0.112 * heart * (1 + 0.5 * (magnify - 1)),
        "heart_tilt": 0.45 + patient.normal("heart_tilt", 0.08),
        "air": 0.44 + patient.normal("air", 0.03),
        "rib_period": 0.071 * (1 + patient.normal("rib_period", 0.04)),
        "rib_phase": patient.uniform("rib_phase"),
        "rib_contrast": 0.09 * (1.15 - 0.35 * age / 100) * (1 + patient.normal("rib_contrast", 0.1)),
        "markings": 1 + patient.normal("markings", 0.15),
        "breast": female * patient.uniform("breast", 0.4, 1.0),
        "rotate": image.normal("rotate", 0.025) + patient.normal("rotate", 0.015),
        "shift_x": image.normal("shift_x", 0.012),
        "shift_y": image.normal("shift_y", 0.015) + 0.02 * ap,
        "zoom": 1 + image.normal("zoom", 0.03) - 0.03 * ap,
        "ap": ap.astype(np.float64),
    }
    return {k: _col(v) for k, v in geo.items()}


def _apply_shape_findings(
    geo: dict[str, np.ndarray], has: np.ndarray, draws: _Draws,
    strength: Mapping[str, float], boxes: Mapping[str, np.ndarray],
) -> None:
    """Findings that change anatomy rather than add an opacity: Cardiomegaly, Emphysema."""
    cardio = _col(has[:, TASK_NAMES.index("Cardiomegaly")])
    box = _pick_boxes(draws, "Cardiomegaly", boxes.get("Cardiomegaly"))
    grow = cardio * strength["Cardiomegaly"] * 0.45 * _col(box[:, 2] / 0.469)
    geo["heart_x"] = geo["heart_x"] + cardio * 0.4 * _col(box[:, 0] - 0.575) + 0.35 * grow * geo["heart_a"]
    geo["heart_a"] = geo["heart_a"] * (1 + grow)
    geo["heart_b"] = geo["heart_b"] * (1 + 0.55 * grow)
    emph = _col(has[:, TASK_NAMES.index("Emphysema")]) * strength["Emphysema"]
    geo["lung_base"] = geo["lung_base"] + 0.035 * emph
    geo["dome"] = geo["dome"] * (1 - 0.6 * emph)
    geo["thorax"] = geo["thorax"] * (1 + 0.02 * emph)
    geo["air"] = geo["air"] * (1 + 0.12 * emph)
    geo["markings"] = geo["markings"] * (1 - 0.6 * emph)
    geo["heart_a"] = geo["heart_a"] * (1 - 0.15 * emph)


def _field_grids(size: int) -> dict[str, int]:
    """Cells per side of each noise grid: vessel markings and fibrosis net scale with size."""
    fine = int(np.clip(size // 4, 8, 28))
    return {"markings": fine, "patch": 10, "fine": fine}


def _noise(keys: np.ndarray, seed: int, size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-image pixel noise (B, H, W) and low-resolution noise grids, each from the image's own RNG."""
    grids = _field_grids(size)
    n_low = sum(g * g for g in grids.values())
    pixel = np.empty((len(keys), size, size), dtype=np.float32)
    low = np.empty((len(keys), n_low), dtype=np.float32)
    for i, key in enumerate(keys):
        rng = np.random.default_rng([seed, int(key)])
        pixel[i] = rng.standard_normal((size, size), dtype=np.float32)
        low[i] = rng.standard_normal(n_low, dtype=np.float32)
    fields, start = {}, 0
    for name, g in grids.items():
        fields[name] = low[:, start:start + g * g].reshape(-1, g, g)
        start += g * g
    return pixel, fields


@functools.lru_cache(maxsize=16)
def _upsampler(size: int, grid: int) -> np.ndarray:
    """(size, grid) Gaussian interpolation matrix (read-only); k @ F @ k.T keeps unit variance.

    Weights below 1e-12 are set to 0: they change no float32 result beyond rounding, and as
    float32 they would be (or make) subnormal numbers, which make the matrix products ~15x slower.
    """
    x = (np.arange(size) + 0.5) / size
    c = (np.arange(grid) + 0.5) / grid
    k = np.exp(-(((x[:, None] - c[None, :]) * grid) ** 2))
    k /= np.sqrt((k**2).sum(axis=1, keepdims=True))
    k[k < 1e-12] = 0
    k = k.astype(np.float32)
    k.setflags(write=False)
    return k


def _draw_anatomy(
    geo: dict[str, np.ndarray], fields: dict[str, np.ndarray], draws: _Draws, size: int
) -> tuple[_Scene, np.ndarray, np.ndarray]:
    """The healthy chest as attenuation (bright = dense): returns scene, base layer, vessel markings."""
    U, Y = _patient_grid(geo, size)
    aU = np.abs(U)
    edges = _lung_edges(aU, U, Y, geo)
    rim = np.minimum(edges["lateral"], edges["apex"])
    inner = np.minimum(rim, edges["dome"])
    np.minimum(inner, edges["medial"], out=inner)
    lung = _step(inner, 0.0, _EDGE, out=inner)
    heart = _heart(U, Y, geo)
    aorta = _radius(U, Y, 0.055, 0.29)
    _step(aorta, 0.032, -_EDGE, out=aorta)
    air = np.maximum(heart, aorta, out=heart)
    np.subtract(1, air, out=air)
    air *= lung  # lung × (1 − max(heart, aorta))
    body = _body(aU, U, Y, geo)
    # 0.56 body − air_g × air × (0.85 + 0.15 σ((0.55 − Y) / 0.1))
    upper = _step(Y, 0.55, -0.1, out=aorta)
    upper *= 0.15 * geo["air"]
    upper += 0.85 * geo["air"]
    upper *= air
    base = np.multiply(body, 0.56, dtype=np.float32)
    base -= upper
    bones = _bones(aU, U, Y, geo, edges["lateral"])
    bones *= body
    base += bones
    female = np.flatnonzero(geo["breast"].ravel() > 0)  # breast is exactly 0 otherwise
    if female.size:
        breast = _breast(aU[female], Y[female])
        breast *= 0.1 * geo["breast"][female]
        breast *= body[female]
        base[female] += breast
    across = aU - 0.1
    across *= across  # shared by the hila and the spread of vessel markings
    hila = _gauss(Y, 0.45, across, 0.035)
    hila *= 0.12
    hila *= air
    base += hila
    scene = _Scene(U=U, Y=Y, geo=geo, lung=air, rim=rim, fields=fields, draws=draws, size=size)
    markings = scene.field("markings")  # exp(−(field / 0.45)²) × spread, scaled
    markings *= markings
    markings *= -1 / 0.45**2
    _exp_(markings)
    markings *= _gauss(Y, 0.47, across, 0.14)
    markings *= 0.09 * geo["markings"]
    markings += 0.02 * geo["markings"]
    markings *= air  # markings_g × air × (0.02 + 0.09 vessels × spread)
    return scene, base, markings


def _radius(U: np.ndarray, Y: np.ndarray, u0: float, y0: float) -> np.ndarray:
    """Distance from the point (U, Y) = (u0, y0)."""
    r = U - u0
    r *= r
    dy = Y - y0
    dy *= dy
    r += dy
    return np.sqrt(r, out=r)


def _gauss(Y: np.ndarray, y0: float, across: np.ndarray, sd: float) -> np.ndarray:
    """exp(−(across + (Y − y0)²) / (2 sd²)), with `across` a squared horizontal distance."""
    g = Y - y0
    g *= g
    g += across
    g *= -1 / (2 * sd**2)
    return _exp_(g)


def _patient_grid(geo: dict[str, np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image grid mapped into the patient's frame (rotation, shift and zoom per image): U = X − 0.5, Y."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    x, y = t[None, None, :], t[None, :, None]
    cos, sin = np.cos(geo["rotate"]) / geo["zoom"], np.sin(geo["rotate"]) / geo["zoom"]
    U = (cos * x - geo["shift_x"]) - sin * y
    Y = (sin * x + (0.5 - geo["shift_y"])) + cos * y
    return U, Y


def _lung_edges(aU: np.ndarray, U: np.ndarray, Y: np.ndarray, geo: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Signed distances (positive inside) from each lung border: lateral, apex, dome, medial."""
    right = U < 0  # image left is the patient's right, whose hemidiaphragm sits higher
    top = geo["lung_top"]
    base = np.multiply(right, np.float32(-0.018))  # lung_base − 0.018 right (bool × float32 stays float32)
    base += geo["lung_base"]
    below_top = Y - top
    v = np.subtract(base, top)
    np.divide(below_top, v, out=v)
    np.clip(v, 0, 1, out=v)
    lateral = np.sqrt(v)  # thorax × (0.5 + 0.5 √v) − |U|
    lateral += 1
    lateral *= 0.5 * geo["thorax"]
    lateral -= aU
    apex = aU - 0.16  # Y − (top + 2.8 (|U| − 0.16)²)
    apex *= apex
    apex *= 2.8
    np.subtract(below_top, apex, out=apex)
    arch = aU - 0.17  # clip(1 − ((|U| − 0.17) / 0.2)², 0, 1)
    arch *= 5
    arch *= arch
    np.subtract(1, arch, out=arch)
    np.clip(arch, 0, 1, out=arch)
    height = np.multiply(right, np.float32(0.012))  # dome + 0.012 right
    height += geo["dome"]
    arch *= height
    dome = np.subtract(base, Y, out=base)
    dome -= arch
    medial = np.multiply(v, 0.02, out=below_top)  # |U| − (mediastinum + 0.02 v)
    medial += geo["mediastinum"]
    np.subtract(aU, medial, out=medial)
    return {"lateral": lateral, "apex": apex, "dome": dome, "medial": medial}


def _heart(U: np.ndarray, Y: np.ndarray, geo: dict[str, np.ndarray]) -> np.ndarray:
    dx, dy = U - (geo["heart_x"] - 0.5), Y - geo["heart_y"]
    cos, sin = np.cos(geo["heart_tilt"]), np.sin(geo["heart_tilt"])
    a, b = geo["heart_a"], geo["heart_b"]
    p = dx * (cos / a)  # p / a with p = cos dx + sin dy
    tmp = np.multiply(dy, sin / a)
    p += tmp
    q = np.multiply(dx, -sin / b, out=dx)  # q / b with q = −sin dx + cos dy
    q += np.multiply(dy, cos / b, out=tmp)
    p *= p
    q *= q
    p += q
    r = np.sqrt(p, out=p)
    return _step(r, 1.0, -_EDGE / b, out=r)  # σ((1 − r) b / EDGE)


def _body(aU: np.ndarray, U: np.ndarray, Y: np.ndarray, geo: dict[str, np.ndarray]) -> np.ndarray:
    """Soft tissue thickness: torso with shoulders, narrowing to the neck at the top."""
    half = _step(Y, 0.2, -0.03)  # thorax + 0.09 + 0.05 σ((0.2 − Y) / 0.03) − 0.3 σ((0.04 − Y) / 0.02)
    half *= 0.05
    neck = _step(Y, 0.04, -0.02)
    neck *= 0.3
    half -= neck
    half += geo["thorax"] + 0.09
    inside = _step(np.subtract(half, aU, out=neck), 0.0, 0.012, out=neck)
    tissue = np.divide(U, half, out=half)  # 0.6 + 0.4 √clip(1 − (U / half)², 0, 1)
    tissue *= tissue
    np.subtract(1, tissue, out=tissue)
    np.clip(tissue, 0, 1, out=tissue)
    np.sqrt(tissue, out=tissue)
    tissue *= 0.4
    tissue += 0.6
    tissue *= inside
    return tissue


def _bones(
    aU: np.ndarray, U: np.ndarray, Y: np.ndarray, geo: dict[str, np.ndarray], lateral: np.ndarray
) -> np.ndarray:
    """Spine, trachea (negative), ribs and clavicles, as added attenuation."""
    u2 = U * U
    bones = np.multiply(u2, -1 / 0.028**2)  # spine: 0.16 exp(−(U / 0.028)²) (0.85 + 0.15 cos(2π Y / 0.05))
    _exp_(bones)
    wave = np.multiply(Y, 2 * np.pi / 0.05, dtype=np.float32)
    np.cos(wave, out=wave)
    wave *= 0.16 * 0.15
    wave += 0.16 * 0.85
    bones *= wave
    trachea = np.multiply(u2, -1 / 0.012**2, out=u2)  # −0.12 exp(−(U / 0.012)²) σ((0.36 − Y) / 0.02)
    _exp_(trachea)
    trachea *= _step(Y, 0.36, -0.02, out=wave)
    trachea *= 0.12
    bones -= trachea
    tmp = trachea
    cage = _step(lateral, -0.03, 0.008)
    cage *= _step(aU, 0.035, 0.01, out=tmp)
    cage *= _step(Y, geo["lung_base"] + 0.02, -0.02, out=tmp)
    cage *= _step(Y, geo["lung_top"] - 0.04, 0.02, out=tmp)
    # Posterior ribs run down and out from the spine; fainter anterior ribs run down and in.
    # (0.5 + 0.5 cos θ)² = (1 + cos θ)² / 4: the 1/4 goes into the rib contrast.
    bend = aU - 0.17  # posterior = Y − 0.22 |U| − 2.5 max(|U| − 0.17, 0)²
    np.maximum(bend, 0, out=bend)
    bend *= bend
    bend *= 2.5
    ribs = np.multiply(aU, -0.22, dtype=np.float32)
    ribs += Y
    ribs -= bend
    phase, period = 2 * np.pi * geo["rib_phase"], geo["rib_period"]
    ribs *= 2 * np.pi / period  # 2π (posterior / period − phase)
    ribs -= phase
    np.cos(ribs, out=ribs)
    ribs += 1
    ribs *= ribs
    anterior = np.multiply(aU, 0.45, out=bend)  # anterior = Y + 0.45 |U|
    anterior += Y
    anterior *= 2 * np.pi / (1.2 * period)  # 2π (anterior / (1.2 period) + phase)
    anterior += phase
    np.cos(anterior, out=anterior)
    anterior += 1
    anterior *= anterior
    anterior *= _step(aU, 0.1, 0.02, out=tmp)
    anterior *= 0.4
    ribs += anterior
    ribs *= cage
    ribs *= 0.25 * geo["rib_contrast"]
    bones += ribs
    s = np.subtract(aU, 0.03, out=ribs)  # along each clavicle, medial → lateral: clip((|U| − 0.03) / 0.27, 0, 1)
    s *= 1 / 0.27
    np.clip(s, 0, 1, out=s)
    clavicle = s  # exp(−((Y − (0.2 − 0.07 s)) / 0.011)²) σ((0.31 − |U|) / 0.01) σ((|U| − 0.03) / 0.01)
    clavicle *= 0.07
    clavicle += Y
    clavicle -= 0.2
    clavicle *= clavicle
    clavicle *= -1 / 0.011**2
    _exp_(clavicle)
    clavicle *= _step(aU, 0.31, -0.01, out=tmp)
    clavicle *= _step(aU, 0.03, 0.01, out=tmp)
    clavicle *= 0.2
    bones += clavicle
    return bones


def _breast(aU: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """exp(−((|U| − 0.22) / 0.14)²) σ((Y − 0.5) / 0.05) σ((lower edge − Y) / 0.012)."""
    square = aU - 0.22
    square *= square
    lower_edge = np.multiply(square, -0.8)  # 0.8 − 0.8 (|U| − 0.22)²
    lower_edge += 0.8
    breast = np.multiply(square, -1 / 0.14**2, out=square)
    _exp_(breast)
    breast *= _step(Y, 0.5, 0.05)
    np.subtract(lower_edge, Y, out=lower_edge)
    breast *= _step(lower_edge, 0.0, 0.012, out=lower_edge)
    return breast


def _film(geo: dict[str, np.ndarray], draws: _Draws) -> dict[str, np.ndarray]:
    """Film response per exposure, (B, 1, 1) each: contrast, brightness, gamma, gradient, noise level."""
    ap = geo["ap"]
    return {
        "contrast": _col(draws.uniform("contrast", 0.85, 1.2)) * (1 - 0.1 * ap),
        "brightness": _col(draws.normal("brightness", 0.04)),
        "gamma": _col(np.exp(draws.normal("gamma", 0.12))),
        "ramp": _col(draws.normal("ramp", 0.04)),
        "sigma": _col(draws.uniform("noise", 0.01, 0.03)) * (1 + 0.3 * ap),
    }


def _expose(attenuation: np.ndarray, pixel_noise: np.ndarray, film: dict[str, np.ndarray]) -> np.ndarray:
    """Film response: brightness, contrast, gamma, a slow gradient, and noise; in [0, 1].

    Works in place: `attenuation` becomes the image and `pixel_noise` is scaled.
    """
    size = attenuation.shape[-1]
    ramp = (np.arange(size, dtype=np.float32) / size - 0.5)[None, None, :] * film["ramp"]
    image = attenuation  # clip(0.1 + brightness + ramp + 1.1 contrast × attenuation, 0, 1) ** gamma
    image *= 1.1 * film["contrast"]
    image += 0.1 + film["brightness"] + ramp
    np.clip(image, 0, 1, out=image)
    np.power(image, film["gamma"], out=image)
    pixel_noise *= film["sigma"]
    image += pixel_noise
    return np.clip(image, 0, 1, out=image)


# ----------------------------------------------------------------------------- finding signatures

_Paint = Callable[[_Scene, float, "np.ndarray | None"], "tuple[np.ndarray, np.ndarray | None]"]
"""A painter returns (added attenuation, factor on vessel markings or None for unchanged)."""


def _pick_boxes(draws: _Draws, task: str, boxes: np.ndarray | None) -> np.ndarray:
    """One real box per image (k, 4): centre x, centre y, w, h; a neutral box where none exist."""
    if boxes is None or len(boxes) == 0:
        return np.tile([0.5, 0.5, 0.47, 0.37], (len(draws.keys), 1))
    pick = np.minimum((draws.uniform(f"box.{task}") * len(boxes)).astype(np.int64), len(boxes) - 1)
    return boxes[pick]


def _ellipse(scene: _Scene, cx: np.ndarray, cy: np.ndarray, rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Normalised elliptic radius: < 1 inside."""
    r = scene.dx(cx)
    r /= rx
    r *= r
    dy = scene.Y - cy
    dy /= ry
    dy *= dy
    r += dy
    return np.sqrt(r, out=r)


def _box_in_lung(scene: _Scene, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A box centre (B, 1, 1) moved, where needed, inside this patient's lung on the box's side."""
    geo = scene.geo
    u = _col(box[:, 0] - 0.5)
    au = np.clip(np.abs(u), geo["mediastinum"] + 0.05, 0.8 * geo["thorax"])
    cy = np.clip(_col(box[:, 1]), geo["lung_top"] + 0.08, geo["lung_base"] - 0.09)
    return 0.5 + np.where(u < 0, -au, au), cy


def _side(scene: _Scene, sign: np.ndarray) -> np.ndarray:
    """1 on the image half whose sign(U) is `sign` (B, 1, 1), softly."""
    return _sigmoid(sign * scene.U / 0.01)


def _atelectasis(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Plate-like linear opacity, near-horizontal, in the lower zones."""
    box = _pick_boxes(scene.draws, "Atelectasis", boxes)
    d = scene.draws
    box[:, 1] = np.clip(box[:, 1], 0.45, 0.75)
    cx, cy = _box_in_lung(scene, box)
    length = _col(np.clip(box[:, 2], 0.08, 0.26))
    thick = _col(d.uniform("atel.thick", 0.012, 0.022))
    angle = _col(d.uniform("atel.angle", -0.35, 0.35))
    dx, dy = scene.dx(cx), scene.Y - cy
    along = np.cos(angle) * dx + np.sin(angle) * dy
    across = -np.sin(angle) * dx + np.cos(angle) * dy
    plate = _exp_(-((across / thick) ** 2)) * _sigmoid((length / 2 - np.abs(along)) / 0.01)
    haze = _exp_(-(dx**2 + dy**2) / (2 * (length / 2) ** 2))
    add = s * (0.5 * plate + 0.1 * haze) * (0.3 + 0.7 * scene.lung)
    return add, None


def _effusion(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Fluid filling the lung base up to a meniscus, blunting the costophrenic angle."""
    box = _pick_boxes(scene.draws, "Effusion", boxes)
    d = scene.draws
    sign = _col(np.where(box[:, 0] < 0.5, -1.0, 1.0))
    both = _col(d.chance("eff.bilateral", 0.25))
    height = _col(np.clip(0.45 * box[:, 3] + 0.06, 0.08, 0.28))
    aU = np.abs(scene.U)
    level = scene.geo["lung_base"] - height * (0.5 + 0.5 * np.clip(aU / scene.geo["thorax"], 0, 1))
    fluid = _sigmoid((scene.Y - level) / 0.015)
    sides = np.maximum(_side(scene, sign), both)
    add = s * 0.6 * scene.geo["air"] * scene.lung * fluid * sides
    return add, 1 - 0.8 * fluid * sides


def _patchy(
    scene: _Scene, s: float, centre: tuple[np.ndarray, np.ndarray], radii: tuple[np.ndarray, np.ndarray],
    density: float, fill: float, edge: float,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Airspace opacity: a soft region × patchy texture; `fill` shifts it from patchy to solid."""
    r = _ellipse(scene, *centre, *radii)
    region = _sigmoid((1 - r) / edge)
    texture = 0.25 + 0.75 * _sigmoid((scene.field("patch") + fill) / 0.5)
    add = s * density * scene.geo["air"] * scene.lung * region * texture
    return add, None


def _infiltration(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Faint, patchy, ill-defined opacity over a larger area."""
    box = _pick_boxes(scene.draws, "Infiltration", boxes)
    radii = (_col(np.clip(0.5 * box[:, 2], 0.06, 0.16)), _col(np.clip(0.5 * box[:, 3], 0.06, 0.18)))
    return _patchy(scene, s, _box_in_lung(scene, box), radii, density=0.55, fill=-0.3, edge=0.3)


def _pneumonia(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Patchy opacity, a little denser and more confluent than infiltration."""
    box = _pick_boxes(scene.draws, "Pneumonia", boxes)
    radii = (_col(np.clip(0.45 * box[:, 2], 0.06, 0.14)), _col(np.clip(0.45 * box[:, 3], 0.06, 0.16)))
    return _patchy(scene, s, _box_in_lung(scene, box), radii, density=0.6, fill=0.1, edge=0.25)


def _consolidation(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Dense, nearly homogeneous lobar opacity with a sharper edge."""
    d = scene.draws
    sign = np.where(d.chance("cons.side", 0.55), -1.0, 1.0)
    zone = np.array([0.36, 0.5, 0.64])[np.minimum((d.uniform("cons.zone") * 3).astype(int), 2)]
    centre = (_col(0.5 + sign * d.uniform("cons.x", 0.13, 0.22)), _col(zone + d.normal("cons.y", 0.02)))
    radii = (_col(d.uniform("cons.rx", 0.07, 0.11)), _col(d.uniform("cons.ry", 0.06, 0.1)))
    return _patchy(scene, s, centre, radii, density=0.65, fill=0.7, edge=0.15)


def _blob(scene: _Scene, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, sharp: float) -> np.ndarray:
    dist = scene.dx(cx)
    dist *= dist
    dy = scene.Y - cy
    dy *= dy
    dist += dy
    np.sqrt(dist, out=dist)
    return _step(dist, radius, -sharp * radius, out=dist)  # σ((radius − dist) / (sharp radius))


def _mass(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Large round opacity (> 3 cm)."""
    box = _pick_boxes(scene.draws, "Mass", boxes)
    radius = _col(np.clip(0.22 * (box[:, 2] + box[:, 3]), 0.035, 0.09))
    add = s * 0.4 * _blob(scene, *_box_in_lung(scene, box), radius, 0.12) * (0.4 + 0.6 * scene.lung)
    return add, None


def _nodule(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Small round bright spot."""
    box = _pick_boxes(scene.draws, "Nodule", boxes)
    radius = _col(np.clip(0.2 * (box[:, 2] + box[:, 3]), 0.012, 0.026))
    add = s * 0.45 * _blob(scene, *_box_in_lung(scene, box), radius, 0.25) * (0.4 + 0.6 * scene.lung)
    return add, None


def _pneumothorax(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Dark, marking-free rim at the apex/lateral edge, bounded by a thin pleural line."""
    box = _pick_boxes(scene.draws, "Pneumothorax", boxes)
    sign = _col(np.where(box[:, 0] < 0.5, -1.0, 1.0))
    depth = _col(np.clip(0.2 * box[:, 2], 0.025, 0.07))
    lowest = _col(np.clip(box[:, 1] + box[:, 3] / 2, 0.35, 0.8))
    extent = _side(scene, sign) * _sigmoid((lowest - scene.Y) / 0.03) * scene.lung
    gap = _sigmoid((depth - scene.rim) / 0.005) * extent
    line = _exp_(-(((scene.rim - depth) / 0.005) ** 2)) * extent
    add = s * (-0.12 * gap + 0.1 * line)
    return add, 1 - min(max(s * 1.2, 0.0), 1.0) * gap


def _edema(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Bilateral perihilar ("bat wing") haze."""
    aU = np.abs(scene.U)
    wing = _exp_(-(((aU - 0.11) / 0.11) ** 2 + ((scene.Y - 0.48) / 0.14) ** 2))
    texture = 0.75 + 0.25 * np.tanh(scene.field("patch"))
    add = s * 0.55 * scene.geo["air"] * scene.lung * wing * texture
    return add, None


def _fibrosis(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Reticular net of fine lines (zero crossings of a noise field), upper zones."""
    net = _exp_(-((scene.field("fine") / 0.35) ** 2))
    upper = _sigmoid((0.52 - scene.Y) / 0.06)
    add = s * 0.3 * net * upper * scene.lung
    return add, None


def _pleural_thickening(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Bright band along the lung's lateral or apical border."""
    d = scene.draws
    sign = _col(np.where(d.chance("pt.side", 0.5), -1.0, 1.0))
    both = _col(d.chance("pt.bilateral", 0.3))
    thick = _col(d.uniform("pt.thick", 0.012, 0.026))
    apical = _col(d.chance("pt.apical", 0.5))
    site = apical * _sigmoid((0.32 - scene.Y) / 0.03) + (1 - apical) * _exp_(
        -(((scene.Y - _col(d.uniform("pt.y", 0.4, 0.65))) / 0.13) ** 2)
    )
    band = _sigmoid((thick - scene.rim) / 0.004) * scene.lung
    add = s * 0.45 * band * site * np.maximum(_side(scene, sign), both)
    return add, None


def _hernia(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Round retrocardiac opacity at the heart base, with an air-fluid level."""
    d = scene.draws
    cx = _col(0.52 + d.normal("hernia.x", 0.015))
    cy = scene.geo["heart_y"] + _col(0.06 + d.normal("hernia.y", 0.012))
    radius = _col(d.uniform("hernia.r", 0.05, 0.075))
    blob = _blob(scene, cx, cy, radius, 0.1)
    air = _blob(scene, cx, cy, 0.8 * radius, 0.1) * _sigmoid((cy - 0.15 * radius - scene.Y) / 0.004)
    add = s * (0.22 * blob - 0.3 * air)
    return add, None


_LESIONS: Mapping[str, _Paint] = MappingProxyType(
    {
        "Atelectasis": _atelectasis,
        "Effusion": _effusion,
        "Infiltration": _infiltration,
        "Mass": _mass,
        "Nodule": _nodule,
        "Pneumonia": _pneumonia,
        "Pneumothorax": _pneumothorax,
        "Consolidation": _consolidation,
        "Edema": _edema,
        "Fibrosis": _fibrosis,
        "Pleural_Thickening": _pleural_thickening,
        "Hernia": _hernia,
    }
)
"""Findings drawn as a signature on top of the anatomy (Cardiomegaly and Emphysema reshape it)."""
