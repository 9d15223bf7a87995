"""A generated dataset folder in a real dataset's layout (chexpert-synth, padchest-synth): where it lives,
generating it whole into a scratch folder and swapping it into place (cxr14-synth's writer), and what may
be replaced. Only what a generator wrote is ever deleted."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from mtlbench.datasets.base import DataRequest
from mtlbench.datasets.cxr14_synth.nih_sample import read_nih_boxes
from mtlbench.datasets.cxr14_synth.params import FINDING_STRENGTH, MAX_SIZE, MIN_IMAGES, MIN_SIZE
from mtlbench.datasets.cxr14_synth.render import Look, render_stream
from mtlbench.datasets.cxr14_synth.writer import (
    COMPLETE_MARKER,
    SYNTH_JSON,
    generate_partial,
    is_complete,
    is_marked_partial,
    move_into_place,
)
from mtlbench.datasets.nih_layout import CACHE_DIR
from mtlbench.errors import UserError
from mtlbench.owned import remove_stale_partials


@dataclass(frozen=True)
class SynthFolder:
    """One generator's folder: its dataset name and the top-level entries it writes."""

    dataset: str
    entries: frozenset[str]  # what generation writes at the top (besides synth.json and the markers)

    def root(self, request: DataRequest) -> Path:
        """data_dir/<dataset>/n{count}-test{test_count}-px{size}-seed{seed}."""
        name = f"n{request.synth_images}-test{request.synth_test_images}-px{request.image_size}-seed{request.data_seed}"
        return Path(request.data_dir) / self.dataset / name

    def check_request(self, request: DataRequest) -> None:
        """One-line UserErrors for sizes the generator cannot serve."""
        if not MIN_SIZE <= request.image_size <= MAX_SIZE:
            raise UserError(f"--image-size must be between {MIN_SIZE} and {MAX_SIZE} for {self.dataset}")
        for flag, n in (("--synth-images", request.synth_images), ("--synth-test-images", request.synth_test_images)):
            if n < MIN_IMAGES:
                raise UserError(f"{flag} must be at least {MIN_IMAGES} for {self.dataset}, got {n}")

    def ensure(self, root: Path, params: dict[str, Any], build: bool, write: Callable[[Path], None]) -> Path:
        """`root` holding a complete dataset generated with `params`: there already, or written by `write(folder)`
        into a scratch folder and moved into place (`build` False: refuse instead). A folder in the way that
        this generator did not write, or that holds other files, is never replaced."""
        if is_complete(root, params):
            return root
        if not build:
            raise UserError(f"no generated {self.dataset} at {root}; run `mtlbench data prepare` with the same options")
        try:
            self.check_replaceable(root)
            remove_stale_partials(root.parent, f"{root.name}.partial-*", is_marked_partial)
            partial = generate_partial(root, write, self.dataset)
            return move_into_place(partial, root, params, self.check_replaceable)
        except OSError as exc:
            raise UserError(
                f"cannot write {self.dataset} under {root.parent} ({exc.strerror or exc}); "
                "pass --data-dir pointing to a writable folder with free space"
            ) from None

    def check_replaceable(self, root: Path) -> None:
        """UserError unless `root` is absent or a folder this generator wrote, holding only what it and the
        image cache write there."""
        if not root.exists() and not root.is_symlink():
            return
        try:
            generator = json.loads((root / SYNTH_JSON).read_text()).get("generator")
        except (OSError, ValueError, AttributeError):
            generator = None
        known = self.entries | {SYNTH_JSON, COMPLETE_MARKER, CACHE_DIR}
        foreign = sorted(e.name for e in root.iterdir() if e.name not in known) if root.is_dir() else []
        if root.is_symlink() or not root.is_dir() or generator != self.dataset or foreign:
            raise UserError(
                f"{root} is in the way of the {self.dataset} dataset and was not written (only) by its generator; "
                "move it away, or pass --data-dir elsewhere"
            )

    def generator_info(self, root: Path) -> dict[str, Any]:
        """The stored synth.json of a generated folder."""
        return json.loads((root / SYNTH_JSON).read_text())


WRITE_THREADS = 4  # file creation overlaps well across threads


def synth_params(dataset: str, version: int, request: DataRequest, source_table: str, **extra: Any) -> dict[str, Any]:
    """What determines a generated folder (stored as synth.json; a change regenerates it): the generator and
    its version, the request's sizes and seed, the renderer's strengths and the table the rows come from."""
    return {
        "generator": dataset,
        "version": version,
        "seed": request.data_seed,
        "count": request.synth_images,
        "test_count": request.synth_test_images,
        "image_size": request.image_size,
        **extra,
        "strength": dict(FINDING_STRENGTH),
        "source_table": f"torchxrayvision/data/{source_table}",
    }


def look(size: int, seed: int) -> Look:
    """cxr14-synth's renderer settings: its signature strengths and NIH's real finding boxes."""
    return Look(size, seed, FINDING_STRENGTH, read_nih_boxes())


def render_into(
    target: Path,
    frame: pd.DataFrame,
    drawn: np.ndarray,
    style: Look,
    save: Callable[[Path, np.ndarray], None],
    advance: Callable[[int], None],
) -> None:
    """Render the images of `frame` (cxr14-synth's renderer columns; "Image Index" is each image's path under
    `target`) with the findings `drawn` (N, 14) and write each with `save(path, image)`, chunk by chunk."""
    names = frame["Image Index"].tolist()
    for folder in {str(Path(n).parent) for n in names}:
        (target / folder).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as writer:
        for start, stop, images in render_stream(frame, drawn, style):
            list(writer.map(save, [target / n for n in names[start:stop]], images))
            advance(stop - start)
