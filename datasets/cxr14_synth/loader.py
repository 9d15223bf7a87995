"""The `cxr14-synth` dataset: request checks, where a dataset lives, and the registered loader
that generates it once (see writer) and reads it as an NIH layout."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory
from mtlbench.datasets.cxr14_synth.params import DATASET_NAME, MAX_SIZE, MIN_IMAGES, MIN_SIZE, generator_params
from mtlbench.datasets.cxr14_synth.writer import SYNTH_JSON, ensure_generated, is_complete
from mtlbench.datasets.nih_layout import read_nih_layout
from mtlbench.datasets.nih_tables import TABLE_ROWS
from mtlbench.errors import UserError
from mtlbench.registry import register_dataset


@register_dataset(DATASET_NAME)
def load_cxr14_synth(request: DataRequest, progress: ProgressFactory) -> DatasetBundle:
    """Generate (once, cached under data_dir) and load the synthetic NIH-layout dataset."""
    check_request(request)
    root = dataset_root(request)
    spec = (request.synth_images, request.synth_test_images, request.image_size, request.data_seed)
    if not request.build_cache and not is_complete(root, generator_params(*spec)):
        raise UserError(f"no generated {DATASET_NAME} at {root}; run `mtlbench data prepare` with the same options")
    try:
        ensure_generated(root, *spec, progress)
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
    for flag, count in (("--synth-images", request.synth_images), ("--synth-test-images", request.synth_test_images)):
        if not MIN_IMAGES <= count <= TABLE_ROWS:
            raise UserError(f"{flag} must be between {MIN_IMAGES} and {TABLE_ROWS} (the NIH table's rows), got {count}")
    if not MIN_SIZE <= request.image_size <= MAX_SIZE:
        raise UserError(
            f"--image-size must be between {MIN_SIZE} and {MAX_SIZE} for cxr14-synth, got {request.image_size}"
        )
    if request.data_seed < 0:
        raise UserError(f"--data-seed must be 0 or more, got {request.data_seed}")


def dataset_root(request: DataRequest) -> Path:
    """Where the dataset for this request lives: data_dir/cxr14-synth/n{count}-test{test_count}-px{size}-seed{seed}."""
    name = f"n{request.synth_images}-test{request.synth_test_images}-px{request.image_size}-seed{request.data_seed}"
    return Path(request.data_dir) / DATASET_NAME / name
