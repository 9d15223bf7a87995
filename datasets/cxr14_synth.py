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

from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory
from mtlbench.datasets.nih_layout import (
    CSV_NAMES,
    IMAGES_DIR,
    TEST_LIST,
    TRAIN_VAL_LIST,
    parse_finding_labels,
    read_nih_layout,
)
from mtlbench.datasets.nih_tables import BBOX_FILE, TABLE_FILE, TABLE_ROWS, nih_data_file, read_nih_table
from mtlbench.errors import UserError
from mtlbench.registry import register_dataset
from mtlbench.tasks import TASK_NAMES

DATASET_NAME = "cxr14-synth"
GENERATOR_VERSION = 2  # 2: strengths ×1.6 (capped at 1) so the quick preset at 32 px learns
MIN_IMAGES = 50
MIN_SIZE, MAX_SIZE = 16, 1024
TEST_PATIENT_FRACTION = 0.2
SIGNATURE_DROP_RATE = 0.05
SPURIOUS_RATE = 0.05
COMPLETE_MARKER = ".complete"
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
    bundle = read_nih_layout(root, request, progress, DATASET_NAME)
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
    interrupted run never leaves a folder that looks complete; stale partial folders are removed.
    """
    params = generator_params(count, size, seed)
    if _is_complete(root, params):
        return root
    _remove_stale_partials(root)
    partial = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        write_layout(partial, count, size, seed, progress)
        (partial / COMPLETE_MARKER).write_text("ok\n")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if _is_complete(root, params):  # another process finished the same dataset first
        shutil.rmtree(partial, ignore_errors=True)
        return root
    if root.exists():
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


def _remove_stale_partials(root: Path) -> None:
    if not root.parent.is_dir():
        return
    for partial in root.parent.glob(f"{root.name}.partial-*"):
        owner = partial.name.rsplit("-", 1)[-1]
        if not (owner.isdigit() and int(owner) != os.getpid() and _process_alive(int(owner))):
            shutil.rmtree(partial, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**31
    return True


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

    def uniform(self, stream: str, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        base = _splitmix(np.array([self.seed], dtype=np.uint64))
        h = _splitmix(_splitmix(base ^ self.keys.astype(np.uint64)) ^ np.uint64(zlib.crc32(stream.encode())))
        u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
        return low + (high - low) * u

    def normal(self, stream: str, sd: float = 1.0, clip: float = 3.0) -> np.ndarray:
        u1 = self.uniform(stream + "/a")
        u2 = self.uniform(stream + "/b")
        z = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
        return sd * np.clip(z, -clip, clip)

    def chance(self, stream: str, p: float | np.ndarray) -> np.ndarray:
        return self.uniform(stream) < p

    def take(self, idx: np.ndarray) -> "_Draws":
        return _Draws(self.seed, self.keys[idx])


def _col(values: Any) -> np.ndarray:
    """(B,) values → (B, 1, 1) float32, to broadcast against (B, H, W) images."""
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """A logistic-like step (slope 1/4 at 0) that is exactly 0 / 1 beyond |x| = 3; cheap."""
    t = np.asarray(x, dtype=np.float32) * np.float32(1 / 6)
    t += np.float32(0.5)
    np.clip(t, 0, 1, out=t)
    square = t * t
    t *= -2
    t += 3
    t *= square
    return t


# ----------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Scene:
    """One chunk of images in the patient's frame: grids, anatomy and fields, all (B, H, W)."""

    X: np.ndarray  # horizontal position, 0 = image left (patient's right), 1 = image right
    Y: np.ndarray  # vertical position, 0 = top
    geo: dict[str, np.ndarray]  # per-image anatomy, each (B, 1, 1)
    lung: np.ndarray  # soft lung mask, heart excluded
    rim: np.ndarray  # distance inside the lung from its lateral/apical border
    fields: dict[str, np.ndarray]  # per-image low-resolution noise grids (B, g, g)
    draws: _Draws
    size: int

    @property
    def U(self) -> np.ndarray:
        return self.X - 0.5

    def take(self, idx: np.ndarray) -> "_Scene":
        return _Scene(
            X=self.X[idx], Y=self.Y[idx], geo={k: v[idx] for k, v in self.geo.items()},
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
    a few chunks are held in memory ahead of the consumer.
    """
    workers = max(1, min(_MAX_THREADS, os.cpu_count() or 1))
    chunks = iter(_chunks(len(rows), size))
    with ThreadPoolExecutor(max_workers=workers) as pool:
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
    keys = image_keys(rows["Image Index"])
    draws = _Draws(seed, keys)
    patient = _Draws(seed, rows["Patient ID"].to_numpy().astype(np.uint64) ^ np.uint64(0xA5A5_0000_0000))
    geo = _anatomy(rows, patient, draws)
    _apply_shape_findings(geo, has, draws, strength, boxes)
    pixel_noise, fields = _noise(keys, seed, size)
    scene, base, markings = _draw_anatomy(geo, fields, draws, size)
    for task, paint in _LESIONS.items():
        t = TASK_NAMES.index(task)
        idx = np.flatnonzero(has[:, t])
        if idx.size:
            add, keep_markings = paint(scene.take(idx), strength[task], boxes.get(task))
            base[idx] += add
            markings[idx] *= keep_markings
    image = _expose(base + markings, pixel_noise, geo, draws)
    return np.rint(image * 255.0).astype(np.uint8)


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


def _upsampler(size: int, grid: int) -> np.ndarray:
    """(size, grid) Gaussian interpolation matrix; k @ F @ k.T keeps unit variance."""
    x = (np.arange(size) + 0.5) / size
    c = (np.arange(grid) + 0.5) / grid
    k = np.exp(-(((x[:, None] - c[None, :]) * grid) ** 2))
    return (k / np.sqrt((k**2).sum(axis=1, keepdims=True))).astype(np.float32)


def _draw_anatomy(
    geo: dict[str, np.ndarray], fields: dict[str, np.ndarray], draws: _Draws, size: int
) -> tuple[_Scene, np.ndarray, np.ndarray]:
    """The healthy chest as attenuation (bright = dense): returns scene, base layer, vessel markings."""
    X, Y = _patient_grid(geo, size)
    U = X - 0.5
    aU = np.abs(U)
    edges = _lung_edges(aU, U, Y, geo)
    rim = np.minimum(edges["lateral"], edges["apex"])
    lung = _sigmoid(np.minimum(np.minimum(rim, edges["dome"]), edges["medial"]) / _EDGE)
    heart = _heart(U, Y, geo)
    aorta = _sigmoid((0.032 - np.hypot(U - 0.055, Y - 0.29)) / _EDGE)
    air = lung * (1 - np.maximum(heart, aorta))
    body = _body(aU, U, Y, geo)
    base = 0.56 * body - geo["air"] * air * (0.85 + 0.15 * _sigmoid((0.55 - Y) / 0.1))
    base += _bones(aU, U, Y, geo, edges["lateral"]) * body
    base += 0.1 * geo["breast"] * _breast(aU, Y) * body
    hila = np.exp(-((aU - 0.1) ** 2 + (Y - 0.45) ** 2) / (2 * 0.035**2))
    base += 0.12 * hila * air
    scene = _Scene(X=X, Y=Y, geo=geo, lung=air, rim=rim, fields=fields, draws=draws, size=size)
    vessels = np.exp(-((scene.field("markings") / 0.45) ** 2))
    spread = np.exp(-((aU - 0.1) ** 2 + (Y - 0.47) ** 2) / (2 * 0.14**2))
    markings = geo["markings"] * air * (0.02 + 0.09 * vessels * spread)
    return scene, base, markings


def _patient_grid(geo: dict[str, np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image grid mapped into the patient's frame: rotation, shift and zoom per image."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    x, y = t[None, None, :], t[None, :, None]
    cos, sin = np.cos(geo["rotate"]), np.sin(geo["rotate"])
    X = 0.5 + (cos * x - sin * y) / geo["zoom"] - geo["shift_x"]
    Y = 0.5 + (sin * x + cos * y) / geo["zoom"] - geo["shift_y"]
    return X.astype(np.float32), Y.astype(np.float32)


def _lung_edges(aU: np.ndarray, U: np.ndarray, Y: np.ndarray, geo: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Signed distances (positive inside) from each lung border: lateral, apex, dome, medial."""
    right = U < 0  # image left is the patient's right, whose hemidiaphragm sits higher
    base = geo["lung_base"] - 0.018 * right
    top = geo["lung_top"]
    v = np.clip((Y - top) / (base - top), 0, 1)
    return {
        "lateral": geo["thorax"] * (0.5 + 0.5 * np.sqrt(v)) - aU,
        "apex": Y - (top + 2.8 * (aU - 0.16) ** 2),
        "dome": base - (geo["dome"] + 0.012 * right) * np.clip(1 - ((aU - 0.17) / 0.2) ** 2, 0, 1) - Y,
        "medial": aU - (geo["mediastinum"] + 0.02 * v),
    }


def _heart(U: np.ndarray, Y: np.ndarray, geo: dict[str, np.ndarray]) -> np.ndarray:
    dx, dy = U - (geo["heart_x"] - 0.5), Y - geo["heart_y"]
    cos, sin = np.cos(geo["heart_tilt"]), np.sin(geo["heart_tilt"])
    p, q = cos * dx + sin * dy, -sin * dx + cos * dy
    r = np.sqrt((p / geo["heart_a"]) ** 2 + (q / geo["heart_b"]) ** 2)
    return _sigmoid((1 - r) * geo["heart_b"] / _EDGE)


def _body(aU: np.ndarray, U: np.ndarray, Y: np.ndarray, geo: dict[str, np.ndarray]) -> np.ndarray:
    """Soft tissue thickness: torso with shoulders, narrowing to the neck at the top."""
    half = geo["thorax"] + 0.09 + 0.05 * _sigmoid((0.2 - Y) / 0.03) - 0.3 * _sigmoid((0.04 - Y) / 0.02)
    inside = _sigmoid((half - aU) / 0.012)
    return inside * (0.6 + 0.4 * np.sqrt(np.clip(1 - (U / half) ** 2, 0, 1)))


def _bones(
    aU: np.ndarray, U: np.ndarray, Y: np.ndarray, geo: dict[str, np.ndarray], lateral: np.ndarray
) -> np.ndarray:
    """Spine, trachea (negative), ribs and clavicles, as added attenuation."""
    spine = 0.16 * np.exp(-((U / 0.028) ** 2)) * (0.85 + 0.15 * np.cos(2 * np.pi * Y / 0.05))
    trachea = -0.12 * np.exp(-((U / 0.012) ** 2)) * _sigmoid((0.36 - Y) / 0.02)
    cage = (
        _sigmoid((lateral + 0.03) / 0.008)
        * _sigmoid((aU - 0.035) / 0.01)
        * _sigmoid((geo["lung_base"] + 0.02 - Y) / 0.02)
        * _sigmoid((Y - geo["lung_top"] + 0.04) / 0.02)
    )
    # Posterior ribs run down and out from the spine; fainter anterior ribs run down and in.
    posterior = Y - 0.22 * aU - 2.5 * np.maximum(aU - 0.17, 0) ** 2
    anterior = Y + 0.45 * aU
    phase, period = geo["rib_phase"], geo["rib_period"]
    ribs = (0.5 + 0.5 * np.cos(2 * np.pi * (posterior / period - phase))) ** 2
    ribs += 0.4 * (0.5 + 0.5 * np.cos(2 * np.pi * (anterior / (1.2 * period) + phase))) ** 2 * _sigmoid((aU - 0.1) / 0.02)
    s = np.clip((aU - 0.03) / 0.27, 0, 1)  # along each clavicle, medial → lateral
    clavicle = np.exp(-(((Y - (0.2 - 0.07 * s)) / 0.011) ** 2)) * _sigmoid((0.31 - aU) / 0.01) * _sigmoid((aU - 0.03) / 0.01)
    return spine + trachea + geo["rib_contrast"] * ribs * cage + 0.2 * clavicle


def _breast(aU: np.ndarray, Y: np.ndarray) -> np.ndarray:
    lower_edge = 0.8 - 0.8 * (aU - 0.22) ** 2
    return np.exp(-(((aU - 0.22) / 0.14) ** 2)) * _sigmoid((Y - 0.5) / 0.05) * _sigmoid((lower_edge - Y) / 0.012)


def _expose(attenuation: np.ndarray, pixel_noise: np.ndarray, geo: dict[str, np.ndarray], draws: _Draws) -> np.ndarray:
    """Film response per exposure: brightness, contrast, gamma, a slow gradient, and noise in [0, 1]."""
    ap = geo["ap"]
    contrast = _col(draws.uniform("contrast", 0.85, 1.2)) * (1 - 0.1 * ap)
    brightness = _col(draws.normal("brightness", 0.04))
    gamma = _col(np.exp(draws.normal("gamma", 0.12)))
    size = attenuation.shape[-1]
    ramp = (np.arange(size, dtype=np.float32) / size - 0.5)[None, None, :] * _col(draws.normal("ramp", 0.04))
    image = np.clip(0.1 + brightness + ramp + contrast * attenuation * 1.1, 0, 1) ** gamma
    sigma = _col(draws.uniform("noise", 0.01, 0.03)) * (1 + 0.3 * ap)
    return np.clip(image + sigma * pixel_noise, 0, 1)


# ----------------------------------------------------------------------------- finding signatures

_Paint = Callable[[_Scene, float, "np.ndarray | None"], tuple[np.ndarray, np.ndarray]]


def _pick_boxes(draws: _Draws, task: str, boxes: np.ndarray | None) -> np.ndarray:
    """One real box per image (k, 4): centre x, centre y, w, h; a neutral box where none exist."""
    if boxes is None or len(boxes) == 0:
        return np.tile([0.5, 0.5, 0.47, 0.37], (len(draws.keys), 1))
    pick = np.minimum((draws.uniform(f"box.{task}") * len(boxes)).astype(np.int64), len(boxes) - 1)
    return boxes[pick]


def _ellipse(scene: _Scene, cx: np.ndarray, cy: np.ndarray, rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Normalised elliptic radius: < 1 inside."""
    return np.sqrt(((scene.X - cx) / rx) ** 2 + ((scene.Y - cy) / ry) ** 2)


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


def _atelectasis(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Plate-like linear opacity, near-horizontal, in the lower zones."""
    box = _pick_boxes(scene.draws, "Atelectasis", boxes)
    d = scene.draws
    box[:, 1] = np.clip(box[:, 1], 0.45, 0.75)
    cx, cy = _box_in_lung(scene, box)
    length = _col(np.clip(box[:, 2], 0.08, 0.26))
    thick = _col(d.uniform("atel.thick", 0.012, 0.022))
    angle = _col(d.uniform("atel.angle", -0.35, 0.35))
    dx, dy = scene.X - cx, scene.Y - cy
    along = np.cos(angle) * dx + np.sin(angle) * dy
    across = -np.sin(angle) * dx + np.cos(angle) * dy
    plate = np.exp(-((across / thick) ** 2)) * _sigmoid((length / 2 - np.abs(along)) / 0.01)
    haze = np.exp(-(dx**2 + dy**2) / (2 * (length / 2) ** 2))
    add = s * (0.5 * plate + 0.1 * haze) * (0.3 + 0.7 * scene.lung)
    return add, np.ones_like(add)


def _effusion(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
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
) -> tuple[np.ndarray, np.ndarray]:
    """Airspace opacity: a soft region × patchy texture; `fill` shifts it from patchy to solid."""
    r = _ellipse(scene, *centre, *radii)
    region = _sigmoid((1 - r) / edge)
    texture = 0.25 + 0.75 * _sigmoid((scene.field("patch") + fill) / 0.5)
    add = s * density * scene.geo["air"] * scene.lung * region * texture
    return add, np.ones_like(add)


def _infiltration(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Faint, patchy, ill-defined opacity over a larger area."""
    box = _pick_boxes(scene.draws, "Infiltration", boxes)
    radii = (_col(np.clip(0.5 * box[:, 2], 0.06, 0.16)), _col(np.clip(0.5 * box[:, 3], 0.06, 0.18)))
    return _patchy(scene, s, _box_in_lung(scene, box), radii, density=0.55, fill=-0.3, edge=0.3)


def _pneumonia(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Patchy opacity, a little denser and more confluent than infiltration."""
    box = _pick_boxes(scene.draws, "Pneumonia", boxes)
    radii = (_col(np.clip(0.45 * box[:, 2], 0.06, 0.14)), _col(np.clip(0.45 * box[:, 3], 0.06, 0.16)))
    return _patchy(scene, s, _box_in_lung(scene, box), radii, density=0.6, fill=0.1, edge=0.25)


def _consolidation(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Dense, nearly homogeneous lobar opacity with a sharper edge."""
    d = scene.draws
    sign = np.where(d.chance("cons.side", 0.55), -1.0, 1.0)
    zone = np.array([0.36, 0.5, 0.64])[np.minimum((d.uniform("cons.zone") * 3).astype(int), 2)]
    centre = (_col(0.5 + sign * d.uniform("cons.x", 0.13, 0.22)), _col(zone + d.normal("cons.y", 0.02)))
    radii = (_col(d.uniform("cons.rx", 0.07, 0.11)), _col(d.uniform("cons.ry", 0.06, 0.1)))
    return _patchy(scene, s, centre, radii, density=0.65, fill=0.7, edge=0.15)


def _blob(scene: _Scene, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, sharp: float) -> np.ndarray:
    dist = np.hypot(scene.X - cx, scene.Y - cy)
    return _sigmoid((radius - dist) / (sharp * radius))


def _mass(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Large round opacity (> 3 cm)."""
    box = _pick_boxes(scene.draws, "Mass", boxes)
    radius = _col(np.clip(0.22 * (box[:, 2] + box[:, 3]), 0.035, 0.09))
    add = s * 0.4 * _blob(scene, *_box_in_lung(scene, box), radius, 0.12) * (0.4 + 0.6 * scene.lung)
    return add, np.ones_like(add)


def _nodule(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Small round bright spot."""
    box = _pick_boxes(scene.draws, "Nodule", boxes)
    radius = _col(np.clip(0.2 * (box[:, 2] + box[:, 3]), 0.012, 0.026))
    add = s * 0.45 * _blob(scene, *_box_in_lung(scene, box), radius, 0.25) * (0.4 + 0.6 * scene.lung)
    return add, np.ones_like(add)


def _pneumothorax(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Dark, marking-free rim at the apex/lateral edge, bounded by a thin pleural line."""
    box = _pick_boxes(scene.draws, "Pneumothorax", boxes)
    sign = _col(np.where(box[:, 0] < 0.5, -1.0, 1.0))
    depth = _col(np.clip(0.2 * box[:, 2], 0.025, 0.07))
    lowest = _col(np.clip(box[:, 1] + box[:, 3] / 2, 0.35, 0.8))
    extent = _side(scene, sign) * _sigmoid((lowest - scene.Y) / 0.03) * scene.lung
    gap = _sigmoid((depth - scene.rim) / 0.005) * extent
    line = np.exp(-(((scene.rim - depth) / 0.005) ** 2)) * extent
    add = s * (-0.12 * gap + 0.1 * line)
    return add, 1 - np.clip(s * 1.2, 0, 1) * gap


def _edema(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Bilateral perihilar ("bat wing") haze."""
    aU = np.abs(scene.U)
    wing = np.exp(-(((aU - 0.11) / 0.11) ** 2 + ((scene.Y - 0.48) / 0.14) ** 2))
    texture = 0.75 + 0.25 * np.tanh(scene.field("patch"))
    add = s * 0.55 * scene.geo["air"] * scene.lung * wing * texture
    return add, np.ones_like(add)


def _fibrosis(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Reticular net of fine lines (zero crossings of a noise field), upper zones."""
    net = np.exp(-((scene.field("fine") / 0.35) ** 2))
    upper = _sigmoid((0.52 - scene.Y) / 0.06)
    add = s * 0.3 * net * upper * scene.lung
    return add, np.ones_like(add)


def _pleural_thickening(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Bright band along the lung's lateral or apical border."""
    d = scene.draws
    sign = _col(np.where(d.chance("pt.side", 0.5), -1.0, 1.0))
    both = _col(d.chance("pt.bilateral", 0.3))
    thick = _col(d.uniform("pt.thick", 0.012, 0.026))
    apical = _col(d.chance("pt.apical", 0.5))
    site = apical * _sigmoid((0.32 - scene.Y) / 0.03) + (1 - apical) * np.exp(
        -(((scene.Y - _col(d.uniform("pt.y", 0.4, 0.65))) / 0.13) ** 2)
    )
    band = _sigmoid((thick - scene.rim) / 0.004) * scene.lung
    add = s * 0.45 * band * site * np.maximum(_side(scene, sign), both)
    return add, np.ones_like(add)


def _hernia(scene: _Scene, s: float, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Round retrocardiac opacity at the heart base, with an air-fluid level."""
    d = scene.draws
    cx = _col(0.52 + d.normal("hernia.x", 0.015))
    cy = scene.geo["heart_y"] + _col(0.06 + d.normal("hernia.y", 0.012))
    radius = _col(d.uniform("hernia.r", 0.05, 0.075))
    blob = _blob(scene, cx, cy, radius, 0.1)
    air = _blob(scene, cx, cy, 0.8 * radius, 0.1) * _sigmoid((cy - 0.15 * radius - scene.Y) / 0.004)
    add = s * (0.22 * blob - 0.3 * air)
    return add, np.ones_like(add)


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
