"""Generation on disk: a dataset folder is written whole into a marked scratch folder next to it
and swapped into place; only what the generator wrote is ever deleted or replaced."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from PIL import Image

from mtlbench.datasets import image_cache
from mtlbench.datasets.base import ProgressFactory
from mtlbench.datasets.cxr14_synth.nih_sample import SynthSample, read_nih_boxes, sample_split
from mtlbench.datasets.cxr14_synth.noise import nih_noise_rates, prevalence, render_labels
from mtlbench.datasets.cxr14_synth.params import DATASET_NAME, FINDING_STRENGTH, generator_params
from mtlbench.datasets.cxr14_synth.render import Look, render_stream
from mtlbench.datasets.nih_layout import (
    CACHE_DIR,
    CSV_NAMES,
    IMAGES_DIR,
    TEST_LIST,
    TRAIN_VAL_LIST,
    parse_finding_labels,
)
from mtlbench.datasets.nih_tables import TABLE_FILE, read_nih_table
from mtlbench.errors import UserError
from mtlbench.owned import remove_stale_partials
from mtlbench.tasks import TASK_NAMES

COMPLETE_MARKER = ".complete"
PARTIAL_MARKER = ".generating"  # in a `<root>.partial-<pid>` folder from its first moment: it is ours to delete
SYNTH_JSON = "synth.json"
WRITE_THREADS = 4


def ensure_generated(
    root: Path,
    count: int,
    test_count: int,
    size: int,
    seed: int,
    progress: ProgressFactory,
    shortcuts: bool = False,
) -> Path:
    """Generate the dataset of `count` train/val and `test_count` test images at `root` (with
    shortcut confounders if `shortcuts`), unless a complete one with the same parameters is there.

    Generation writes into a sibling `<root>.partial-<pid>` and renames it into place, so an
    interrupted run never leaves a folder that looks complete; partial folders of dead processes
    are removed. An existing `root` is replaced only if this generator wrote it and it holds
    nothing else (see `check_replaceable`).
    """
    params = generator_params(count, test_count, size, seed, shortcuts)
    if is_complete(root, params):
        return root
    table = read_nih_table(TABLE_FILE)
    sample = sample_split(count, test_count, seed, table)  # a size its patients cannot give: refused before any folder
    check_replaceable(root)
    remove_stale_partials(root.parent, f"{root.name}.partial-*", is_marked_partial)
    partial = generate_partial(
        root, lambda target: write_layout(target, sample, table, size, seed, params, progress, shortcuts)
    )
    return move_into_place(partial, root, params)


def is_marked_partial(folder: Path) -> bool:
    return (folder / PARTIAL_MARKER).is_file()


def generate_partial(root: Path, write: Callable[[Path], None], dataset: str = DATASET_NAME) -> Path:
    """A complete dataset, written by `write(folder)`, in this process's scratch folder `<root>.partial-<pid>`,
    marked as the generator's from its first moment; on any failure the scratch folder is deleted."""
    partial = root.with_name(f"{root.name}.partial-{os.getpid()}")
    try:
        partial.mkdir(parents=True)  # never an existing folder: one the generator did not mark is not ours
    except FileExistsError:
        raise UserError(
            f"{partial} is in the way of the {dataset} generator and was not written by it; "
            "move it away, or pass --data-dir elsewhere"
        ) from None
    try:
        (partial / PARTIAL_MARKER).write_text(f"a {dataset} generation in progress; deleted once it is done\n")
        write(partial)
        (partial / PARTIAL_MARKER).unlink()
        (partial / COMPLETE_MARKER).write_text("ok\n")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return partial


def move_into_place(
    partial: Path, root: Path, params: dict[str, Any], check: Callable[[Path], None] | None = None
) -> Path:
    """Rename the complete `partial` to `root`, replacing an outdated dataset there if it may be
    (`check`, default `check_replaceable`, raises if not); `partial` does not survive, whatever happens."""
    check = check or check_replaceable
    if is_complete(root, params):  # another process finished the same dataset first
        shutil.rmtree(partial, ignore_errors=True)
        return root
    if root.exists():
        try:
            check(root)  # again: files may have been added while generating
        except UserError:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        shutil.rmtree(root)
    try:
        os.replace(partial, root)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not is_complete(root, params):
            raise
    return root


def write_layout(
    target: Path,
    sample: SynthSample,
    table: pd.DataFrame,
    size: int,
    seed: int,
    params: dict[str, Any],
    progress: ProgressFactory,
    shortcuts: bool = False,
) -> None:
    """Write a complete NIH layout (images, CSV, split lists, synth.json) of `sample`, rows of the
    NIH `table`, into `target` (with shortcut confounders if `shortcuts`)."""
    rows = sample.rows
    full_prevalence = prevalence(parse_finding_labels(table["Finding Labels"], TABLE_FILE))
    labels = parse_finding_labels(rows["Finding Labels"], TABLE_FILE)
    rendered = render_labels(labels, rows["Image Index"], seed, full_prevalence, nih_noise_rates(full_prevalence))
    _write_images(
        target / IMAGES_DIR, rows, rendered, Look(size, seed, FINDING_STRENGTH, read_nih_boxes(), shortcuts), progress
    )
    rows.to_csv(target / CSV_NAMES[0], index=False)
    (target / TRAIN_VAL_LIST).write_text("".join(f"{n}\n" for n in sample.train_val))
    (target / TEST_LIST).write_text("".join(f"{n}\n" for n in sample.test))
    _write_synth_json(target, params, sample, labels, rendered)


def _write_images(
    folder: Path, rows: pd.DataFrame, rendered: np.ndarray, look: Look, progress: ProgressFactory
) -> None:
    """Render the images of `rows` as `look` says and write them as PNGs into the new `folder`, chunk by chunk."""
    folder.mkdir(parents=True)
    advance = progress(f"generating {DATASET_NAME}", len(rows))
    names = rows["Image Index"].astype(str).tolist()
    stream = render_stream(rows, rendered, look)
    # File creation dominates at small sizes and overlaps well across threads.
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as writer:
        for start, stop, images in stream:
            list(writer.map(write_png, [folder / n for n in names[start:stop]], images))
            advance(stop - start)


def _write_synth_json(
    target: Path, params: dict[str, Any], sample: SynthSample, labels: np.ndarray, rendered: np.ndarray
) -> None:
    """synth.json: the generator's parameters and the label and patient counts of what it wrote."""
    rows = sample.rows
    in_test = rows["Image Index"].astype(str).isin(sample.test).to_numpy()
    stats = {
        "label_positives": dict(zip(TASK_NAMES, labels.sum(axis=0).tolist())),
        "test_label_positives": dict(zip(TASK_NAMES, labels[in_test].sum(axis=0).tolist())),
        "rendered_positives": dict(zip(TASK_NAMES, rendered.sum(axis=0).tolist())),
        "patients": int(rows["Patient ID"].nunique()),
        "test_patients": int(rows["Patient ID"][in_test].nunique()),
    }
    (target / SYNTH_JSON).write_text(json.dumps({**params, "stats": stats}, indent=2) + "\n")


def write_png(path: Path, image: np.ndarray) -> None:
    """One (H, W) uint8 image as a grayscale PNG."""
    Image.fromarray(image, mode="L").save(path, format="PNG")


def is_complete(root: Path, params: dict[str, Any]) -> bool:
    """Whether `root` holds a finished dataset generated with `params`."""
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
        raise UserError(
            f"{root} is in the way of the {DATASET_NAME} dataset and was not written by its generator "
            f"(no {SYNTH_JSON} of it); move it away, or pass --data-dir elsewhere"
        )
    foreign = foreign_entries(root)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
        raise UserError(
            f"{root} must be generated again, but holds {len(foreign)} file(s) the generator did not "
            f"write ({shown}); move them out of it, or pass --data-dir elsewhere"
        )


def foreign_entries(root: Path) -> list[str]:
    """Entries under the dataset folder `root` that neither generation nor its image cache wrote."""
    known = {IMAGES_DIR, CSV_NAMES[0], TRAIN_VAL_LIST, TEST_LIST, SYNTH_JSON, COMPLETE_MARKER, CACHE_DIR}
    foreign = sorted(e.name for e in root.iterdir() if e.name not in known or e.is_symlink())
    images, cache = root / IMAGES_DIR, root / CACHE_DIR
    if images.is_dir() and not images.is_symlink():
        foreign += sorted(
            f"{IMAGES_DIR}/{e.name}"
            for e in images.iterdir()
            if e.is_symlink() or not e.is_file() or not e.name.endswith(".png")
        )
    if cache.is_dir() and not cache.is_symlink():
        foreign += [f"{CACHE_DIR}/{name}" for name in image_cache.foreign_entries(cache)]
    return foreign
