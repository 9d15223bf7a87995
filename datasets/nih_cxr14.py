"""nih-cxr14: NIH ChestX-ray14 (Wang et al., CVPR 2017) read from its official download layout.

`--data-dir ROOT` is the folder of the download: the PNGs (flat in `images/` or in the
12-archive layout `images_001/images/` … `images_012/images/`), the two official split lists,
and the metadata CSV. Without a CSV in ROOT the copy shipped with torchxrayvision is used.
See datasets/nih_layout.py for what is read and datasets/image_cache.py for the pixel cache.
"""

from __future__ import annotations

from mtlbench.datasets.base import DataRequest, DatasetBundle, ProgressFactory
from mtlbench.datasets.nih_layout import read_nih_layout
from mtlbench.datasets.nih_tables import TABLE_FILE, nih_data_file
from mtlbench.errors import UserError
from mtlbench.registry import register_dataset

DATASET_NAME = "nih-cxr14"
MAX_SIZE = 1024  # the source resolution


@register_dataset(DATASET_NAME)
def load_nih_cxr14(request: DataRequest, progress: ProgressFactory) -> DatasetBundle:
    """NIH ChestX-ray14 from `request.data_dir` (its download folder), through the image cache."""
    if not 16 <= request.image_size <= MAX_SIZE:
        raise UserError(f"--image-size must be between 16 and {MAX_SIZE} for {DATASET_NAME}, got {request.image_size}")
    root = request.data_dir
    if not root.is_dir():
        raise UserError(
            f"{DATASET_NAME}: {root} does not exist; pass --data-dir pointing to the NIH ChestX-ray14 download "
            "(the folder with train_val_list.txt, test_list.txt and images/ or images_001/ … images_012/)"
        )
    return read_nih_layout(root, request, progress, DATASET_NAME, fallback_csv=_shipped_table())


def _shipped_table():
    try:
        return nih_data_file(TABLE_FILE)
    except UserError:
        return None
