"""The `cxr14-synth` dataset: request checks, where a dataset lives, and the registered loader
that generates it once (see writer) and reads it as an NIH layout."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory
from mtlbench.datasets.cxr14_synth.params import DATASET_NAME, MAX_SIZE, MIN_IMAGES, MIN_SIZE, generator_params
from mtlbench.datasets.cxr14_synth.rng import Draws, image_keys
from mtlbench.datasets.cxr14_synth.writer import SYNTH_JSON, ensure_generated, is_complete
from mtlbench.datasets.nih_layout import read_nih_layout
from mtlbench.datasets.nih_tables import TABLE_ROWS
from mtlbench.errors import UserError
from mtlbench.registry import register_dataset


MISSING_SEED = 0x6D155  # `--synth-missing`'s draws: apart from the renderer's streams of the same seed


@register_dataset(DATASET_NAME)
def load_cxr14_synth(request: DataRequest, progress: ProgressFactory) -> DatasetBundle:
    """Generate (once, cached under data_dir) and load the synthetic NIH-layout dataset."""
    check_request(request)
    root = dataset_root(request)
    spec = (request.synth_images, request.synth_test_images, request.image_size, request.data_seed)
    if not request.build_cache and not is_complete(root, generator_params(*spec, request.synth_shortcuts)):
        raise UserError(f"no generated {DATASET_NAME} at {root}; run `mtlbench data prepare` with the same options")
    try:
        ensure_generated(root, *spec, progress, shortcuts=request.synth_shortcuts)
    except OSError as exc:  # read-only folder, disk full, ...: nothing half-written is kept
        raise UserError(
            f"cannot write the synthetic dataset under {request.data_dir} ({exc.strerror or exc}); "
            "pass --data-dir pointing to a writable folder with free space"
        ) from None
    bundle = read_nih_layout(root, request, progress, DATASET_NAME, fix_hint=f"delete {root} to generate it again")
    generator = json.loads((root / SYNTH_JSON).read_text())
    bundle = dataclasses.replace(bundle, info={**bundle.info, "generator": generator})
    return leave_out_labels(bundle, request.synth_missing, request.data_seed) if request.synth_missing else bundle


def leave_out_labels(bundle: DatasetBundle, fraction: float, seed: int) -> DatasetBundle:
    """`bundle` with a `fraction` of its labels missing (NaN), drawn per task and image: each a hash of
    (seed, image name, task), so an image's missing labels do not depend on which split it is in or
    which other images were drawn (`--synth-missing`)."""
    splits = {}
    for name, split in bundle.splits().items():
        draws = Draws(seed ^ MISSING_SEED, image_keys(split.image_ids))
        gone = np.column_stack([draws.chance(f"missing.{task}", fraction) for task in bundle.task_names])
        labels = np.where(gone, np.float32(np.nan), split.labels.astype(np.float32))
        splits[name] = dataclasses.replace(split, labels=labels)
    labelled = {k: dict(zip(bundle.task_names, (~np.isnan(s.labels)).sum(axis=0).tolist())) for k, s in splits.items()}
    info = {**bundle.info, "synth_missing": fraction, "labelled": labelled}
    return dataclasses.replace(bundle, **splits, info=info)


def check_request(request: DataRequest) -> None:
    """UserError with a one-line fix unless the request is one cxr14-synth can serve."""
    for flag, count in (("--synth-images", request.synth_images), ("--synth-test-images", request.synth_test_images)):
        if not MIN_IMAGES <= count <= TABLE_ROWS:
            raise UserError(f"{flag} must be between {MIN_IMAGES} and {TABLE_ROWS} (the NIH table's rows), got {count}")
    if not MIN_SIZE <= request.image_size <= MAX_SIZE:
        raise UserError(
            f"--image-size must be between {MIN_SIZE} and {MAX_SIZE} for cxr14-synth, got {request.image_size}"
        )
    if not 0.0 <= request.synth_missing < 1.0:
        raise UserError(f"--synth-missing must be at least 0 and below 1, got {request.synth_missing}")
    if request.data_seed < 0:
        raise UserError(f"--data-seed must be 0 or more, got {request.data_seed}")


def dataset_root(request: DataRequest) -> Path:
    """Where the dataset for this request lives: data_dir/cxr14-synth/n{count}-test{test_count}-px{size}-seed{seed},
    with `-shortcuts` after it when shortcut confounders are drawn (`--synth-shortcuts`)."""
    name = f"n{request.synth_images}-test{request.synth_test_images}-px{request.image_size}-seed{request.data_seed}"
    name += "-shortcuts" if request.synth_shortcuts else ""
    return Path(request.data_dir) / DATASET_NAME / name
