"""Shared fixtures: a tiny in-memory dataset whose labels are visible in the pixels."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from mtlbench.datasets.base import DatasetBundle, Split
from mtlbench.results.store import ResultsStore
from mtlbench.tasks import TASK_NAMES


def make_split(n: int, size: int, seed: int, offset: int = 0) -> Split:
    """Random images where task t's label brightens a stripe t of the image."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(TASK_NAMES))) < 0.3).astype(np.uint8)
    images = rng.integers(0, 120, size=(n, size, size)).astype(np.int32)
    rows = np.array_split(np.arange(size), len(TASK_NAMES))
    for t, r in enumerate(rows):
        images[:, r, :] += 100 * labels[:, t, None, None]
    return Split.from_images(
        images=np.clip(images, 0, 255).astype(np.uint8),
        labels=labels,
        image_ids=np.array([f"{offset + i:08d}_000.png" for i in range(n)]),
        patient_ids=np.arange(offset, offset + n),
    )


def make_bundle(n_train: int = 96, size: int = 32) -> DatasetBundle:
    """A small train/val/test bundle with disjoint patients."""
    return DatasetBundle(
        name="toy",
        train=make_split(n_train, size, 1, 0),
        val=make_split(48, size, 2, 10_000),
        test=make_split(64, size, 3, 20_000),
        info={"fingerprint": "toy"},
    )


@pytest.fixture
def toy_bundle() -> DatasetBundle:
    """A tiny dataset for trainer tests."""
    return make_bundle()


@dataclass
class TinyRun:
    """What one tiny end-to-end CPU run stored: result, test losses, weight rows, diagnostics."""

    out: Any
    test_losses: list[float]
    weights: list[dict]  # rows {epoch, step, task, weight}; step −1 is the epoch mean
    diagnostics: dict[str, float]
    path: Path  # its results database, for what the fields above do not hold

    def store(self) -> ResultsStore:
        """The run's results database, opened (use as a context manager)."""
        return ResultsStore(self.path)

    def steps(self) -> set[int]:
        """Training steps that have per-step weight rows."""
        return {r["step"] for r in self.weights if r["step"] >= 0}

    def per_step(self) -> dict[int, list[float]]:
        """{step: the 14 weights logged at that step}, steps ≥ 0 only."""
        out: dict[int, list[float]] = {}
        for r in self.weights:
            if r["step"] >= 0:
                out.setdefault(r["step"], []).append(r["weight"])
        return out

    def per_step_epoch_means(self, steps_per_epoch: int) -> list[float]:
        """Check weights were logged at every step (plus the epoch mean, one epoch) and are finite;
        return the 14 epoch means."""
        assert len(self.steps()) == steps_per_epoch and len(self.weights) == 14 * (steps_per_epoch + 1)
        means = [r["weight"] for r in self.weights if r["step"] == -1]
        assert len(means) == 14 and all(np.isfinite(means))
        return means

    def assert_complete(self) -> None:
        """The run completed and stored 14 finite test losses."""
        assert self.out.status == "complete", self.out.detail
        assert len(self.test_losses) == 14 and all(np.isfinite(self.test_losses))


@pytest.fixture
def tiny_run(tmp_path, toy_bundle) -> Callable[..., TinyRun]:
    """Run `method` end to end on the toy bundle (smoke preset, CPU, batch 16) and read back the store."""
    from mtlbench.config import build_config
    from mtlbench.results.store import ResultsStore
    from mtlbench.training import train_run
    from tests.tiny_model import tiny_model

    def run(method: str, epochs: int = 1) -> TinyRun:
        cfg = replace(build_config("smoke"), device="cpu", epochs=epochs, batch_size=16, method=method)
        with ResultsStore(tmp_path / f"{method}.sqlite") as store:
            out = train_run(cfg, toy_bundle, store, {}, model_factory=tiny_model)
            run_id = (out.run_id,)
            losses = [
                r["loss"] for r in store.query("SELECT loss FROM metrics WHERE split='test' AND run_id=?", run_id)
            ]
            weights = [
                dict(r) for r in store.query("SELECT epoch, step, task, weight FROM weights WHERE run_id=?", run_id)
            ]
            diag = store.query("SELECT name, value FROM diagnostics WHERE run_id=?", run_id)
        return TinyRun(out, losses, weights, {r["name"]: r["value"] for r in diag}, store.path)

    return run


@pytest.fixture(scope="session")
def results_db(tmp_path_factory):
    """(path, ProtocolRecord) of a results database written by tests/results_fixture.py without training:
    5 methods × 3 seeds of one CPU protocol, one failed and one diverged run. Shared by the session:
    copy it before changing it."""
    from tests.results_fixture import build_results

    path = tmp_path_factory.mktemp("results") / "r.sqlite"
    [record] = build_results(path)
    return path, record
