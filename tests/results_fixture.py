"""A realistic results database written directly through the ResultsStore API, without training.

Report, export and store tests need a database, not a sweep: `write_protocol` writes the runs of one
protocol (methods × seeds) the way `mtlbench run` writes them — a config from a real RunConfig, per-epoch
train/val metrics and task weights, val and test predictions at the selected epoch, test metrics,
costs, diagnostics, and runs that failed or diverged — from a fixed RNG, in a fraction of a second.

Some facts hold by construction, so tests can assert values rather than ranges:

* the test labels have exactly `test_positives[task]` positives per task (default TEST_POSITIVES: one
  task at exactly the report's default threshold of 20, four below it, Hernia with a single one);
* each method's test and val scores are of a `kind` (SCORES): "perfect" (every positive above 0.5,
  every negative below: AUROC = AP = accuracy@0.5 = 1 on every task), "noise" (independent of the
  labels), a float (logistic separation: higher is better), or another method's name (the very same
  probabilities as that method's run of the same seed: every difference to it is exactly 0);
* costs are set per method (STEP_S, PEAK_MB) and seed, so time and memory figures are known;
* stored metrics are what the trainer would compute from the stored probabilities (mtlbench.task_metrics),
  the losses the mean binary cross-entropy of those probabilities.

Test images are NIH-style names `PPPPPPPP_KKK.png` with several images per patient, and predictions
store each image's patient id (schema 6), as the trainer does; `ProtocolRecord.test_patients` is the
ground truth a patient-level bootstrap must recover. `store_patients=False` writes rows as before
schema 6 (no patient ids: the report falls back to the patient an NIH name encodes), and
`nih_names=False` names images `image_NNNNN.png`, which encode no patient.

To extend: add a field to ProtocolSpec (with a default, so existing tests are unchanged), or write a
second protocol into the same database (`write_protocol(store, replace(spec, device="cuda"))`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import sklearn

from mtlbench.config import build_config
from mtlbench.task_metrics import task_metrics
from mtlbench.results.leases import Owner
from mtlbench.results.store import ResultsStore, RunKey
from mtlbench.tasks import TASK_NAMES

# test positives per task: ≥ 20 (the report's default --min-positives) is averaged; Consolidation sits
# exactly at 20, Edema one below; Hernia has one test positive, as in the default synthetic run
TEST_POSITIVES: dict[str, int] = {
    "Atelectasis": 45,
    "Cardiomegaly": 24,
    "Effusion": 52,
    "Infiltration": 70,
    "Mass": 28,
    "Nodule": 31,
    "Pneumonia": 12,
    "Pneumothorax": 26,
    "Consolidation": 20,
    "Edema": 19,
    "Emphysema": 22,
    "Fibrosis": 15,
    "Pleural_Thickening": 29,
    "Hernia": 1,
}
# validation positives: Hernia has none (its thresholds fall back to 0.5)
VAL_POSITIVES: dict[str, int] = {
    "Atelectasis": 20,
    "Cardiomegaly": 10,
    "Effusion": 24,
    "Infiltration": 30,
    "Mass": 12,
    "Nodule": 13,
    "Pneumonia": 6,
    "Pneumothorax": 11,
    "Consolidation": 9,
    "Edema": 8,
    "Emphysema": 10,
    "Fibrosis": 7,
    "Pleural_Thickening": 12,
    "Hernia": 0,
}
METHODS = ("ew", "deepchest", "pcgrad", "mgda", "graddrop")
SCORES: dict[str, float | str] = {"ew": "noise", "deepchest": 0.8, "pcgrad": "perfect", "mgda": 0.4, "graddrop": "ew"}
# median step time (s) on the CPU, scaled per run by `jitter` (so seeds differ and ratios to EW vary)
STEP_S = {"ew": 0.050, "deepchest": 0.052, "pcgrad": 0.610, "mgda": 0.550, "graddrop": 0.580}
PEAK_MB = {"ew": 900.0, "deepchest": 905.0, "pcgrad": 1400.0, "mgda": 1350.0, "graddrop": 1380.0}
DEFAULT_SCORE, DEFAULT_STEP_S, DEFAULT_PEAK_MB = 0.5, 0.3, 1000.0  # a method the tables above lack
CUDA_NAME = "NVIDIA H100 80GB HBM3"
TRACEBACK = (
    "RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR\n"
    "Traceback (most recent call last):\n"
    '  File "mtlbench/training/run.py", line 113, in train_run\n'
    "    result = _train(config, data, store, run_id, owner, device, reporter, ckpt_path, claim.taken_over,\n"
    "RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR\n"
)


@dataclass(frozen=True)
class Failure:
    """A run that did not complete: its status, its stored error, the step it diverged at, the epochs
    it stored before that (train/val metrics and weights)."""

    status: str  # failed | diverged | oom | interrupted
    error: str
    diverged_step: int | None = None
    epochs_done: int = 1


FAILURES: dict[tuple[str, int], Failure] = {
    ("graddrop", 2): Failure("failed", TRACEBACK),
    ("mgda", 2): Failure("diverged", "non-finite loss", diverged_step=13),
}


@dataclass(frozen=True)
class ProtocolSpec:
    """What to write: one protocol's methods × seeds, its data and its device."""

    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    dataset: str = "cxr14-synth"
    device: str = "cpu"  # "cuda": costs carry peak_cuda_mb, device the GPU's name, precision bf16
    epochs: int = 3
    steps_per_epoch: int = 10
    batch_size: int = 32
    test_patients: int = 120  # each with 1–5 images
    val_patients: int = 60
    test_positives: dict[str, int] = field(default_factory=lambda: dict(TEST_POSITIVES))
    val_positives: dict[str, int] = field(default_factory=lambda: dict(VAL_POSITIVES))
    scores: dict[str, float | str] = field(default_factory=lambda: dict(SCORES))
    step_s: dict[str, float] = field(default_factory=lambda: dict(STEP_S))
    peak_mb: dict[str, float] = field(default_factory=lambda: dict(PEAK_MB))
    failures: dict[tuple[str, int], Failure] = field(default_factory=lambda: dict(FAILURES))
    config: dict[str, Any] = field(default_factory=dict)  # RunConfig overrides (a new protocol)
    data_seed: int = 0  # the labels' and ids' RNG
    store_patients: bool = True  # False: predictions without patient ids (databases before schema 6)
    nih_names: bool = True  # False: image names that encode no patient
    split_info: dict[str, Any] = field(default_factory=dict)  # the data info's "image_split" (`--split random-image`)


@dataclass
class ProtocolRecord:
    """What `write_protocol` wrote, for tests to compute expected values from."""

    spec: ProtocolSpec
    test_ids: list[str]
    test_patients: np.ndarray  # (N,) patient number of each test image
    test_labels: np.ndarray  # (N, T) uint8
    val_ids: list[str]
    val_labels: np.ndarray
    run_ids: dict[tuple[str, int], int] = field(default_factory=dict)
    status: dict[tuple[str, int], str] = field(default_factory=dict)
    test_probs: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)  # complete runs, float32 as stored
    val_probs: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)  # at the selected epoch
    selected_epoch: dict[tuple[str, int], int] = field(default_factory=dict)
    costs: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    config_json: dict[tuple[str, int], dict] = field(default_factory=dict)

    def complete(self, method: str) -> list[int]:
        """The seeds of `method` whose run completed, ascending."""
        return sorted(s for (m, s), st in self.status.items() if m == method and st == "complete")


def _ids_and_patients(
    n_patients: int, first_patient: int, rng: np.random.Generator, nih_names: bool = True
) -> tuple[list[str], np.ndarray]:
    counts = rng.integers(1, 6, size=n_patients)
    patients = np.repeat(np.arange(first_patient, first_patient + n_patients), counts)
    ids = [
        f"{p:08d}_{k:03d}.png"
        for p, c in zip(range(first_patient, first_patient + n_patients), counts)
        for k in range(c)
    ]
    return (ids if nih_names else [f"image_{first_patient + i:05d}.png" for i in range(len(ids))]), patients


def _labels(n: int, positives: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    labels = np.zeros((n, len(TASK_NAMES)), np.uint8)
    for t, task in enumerate(TASK_NAMES):
        labels[rng.choice(n, positives[task], replace=False), t] = 1
    return labels


def _probs(kind: float | str, labels: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """P(finding) of a score `kind` (see the module docstring); `strength` scales a float kind's signal."""
    y = labels.astype(np.float64)
    if kind == "perfect":  # positives in (0.55, 0.95), negatives in (0.05, 0.45)
        p = np.where(y == 1, 0.75, 0.25) + rng.uniform(-0.2, 0.2, size=y.shape)
    elif kind == "noise":
        p = rng.uniform(0.02, 0.98, size=y.shape)
    else:
        # mostly below 0.5, as for a rare finding
        z = float(kind) * strength * (2 * y - 1) + rng.normal(0.0, 1.0, size=y.shape) - 1.0
        p = 1 / (1 + np.exp(-z))
    return p.astype(np.float32)


def bce(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-task mean binary cross-entropy of probabilities (the loss a run stores)."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    y = labels.astype(np.float64)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=0)


def _config(spec: ProtocolSpec, method: str, seed: int):
    from mtlbench import grads
    from mtlbench.backend import resolve_precision
    from mtlbench.registry import METHODS as REGISTRY

    import torch

    config = build_config(
        "smoke",
        [({"epochs": spec.epochs, "batch_size": spec.batch_size, "synth_images": 1200, **spec.config}, "fixture")],
    )
    device = torch.device(spec.device)
    # resolved as mtlbench.training.factories.resolve_runtime does (without asking for the device)
    return replace(
        config,
        method=method,
        seed=seed,
        dataset=spec.dataset,
        device=spec.device,
        data_fingerprint=f"fixture-{spec.dataset}-{spec.data_seed}",
        grad_engine=grads.resolve_engine(config.grad_engine, device, REGISTRY.get(method).space().small),
        precision=resolve_precision(config.precision, device),
    )


def _method(config):
    """The run's method object, as mtlbench.training.factories.build_method makes it (without importing
    the training code): what the run records of it are its hyperparameters, weight scale and diagnostics."""
    import torch

    from mtlbench.registry import METHODS as REGISTRY

    cls = REGISTRY.get(config.method)
    generator = torch.Generator().manual_seed(config.seed + 7919)
    return cls(TASK_NAMES, cls.make_params(config.method_params), generator=generator)


def jitter(method: str, seed: int) -> float:
    """The run's time factor: 1 + 2% per seed, and 0–4% more that depends on the method too."""
    return (1 + 0.02 * seed) * (1 + 0.02 * ((seed + len(method)) % 3))


def _costs(spec: ProtocolSpec, method: str, seed: int) -> dict[str, Any]:
    step = spec.step_s.get(method, DEFAULT_STEP_S) * jitter(method, seed)
    steps = spec.epochs * spec.steps_per_epoch
    train_s = step * steps * 1.1
    eval_s = 0.4 + 0.01 * seed
    peak = spec.peak_mb.get(method, DEFAULT_PEAK_MB) + 10 * seed
    cuda = spec.device == "cuda"
    return dict(
        device=CUDA_NAME if cuda else "cpu",
        wall_s=train_s + eval_s + 1.5,
        train_s=train_s,
        eval_s=eval_s,
        median_step_s=step,
        median_method_s=step * 0.25,
        images_per_s=steps * spec.batch_size / train_s,
        peak_cuda_mb=peak if cuda else None,
        peak_rss_mb=peak * (1.8 if cuda else 1.0),
        rss_scope="run",
        median_step_cpu_s=2 * step,
        other_load=0.01,
        unreliable=False,
    )  # a quiet machine


def _epoch_weights(
    method: str, weight_scale: str, epoch: int, steps: list[int], rng: np.random.Generator
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(epoch mean (T,), per-step (S, T) or None) as the trainer logs them; (None, None) without weights."""
    t = len(TASK_NAMES)
    if weight_scale == "no-weights":
        return None, None
    if method == "ew":
        return np.ones(t), None
    if method in ("deepchest", "dwa"):  # changed once per epoch
        w = np.exp(0.3 * epoch * rng.normal(size=t))
        return t * w / w.sum(), None
    per_step = rng.gamma(4.0, 1.0, size=(len(steps), t))
    per_step = t * per_step / per_step.sum(axis=1, keepdims=True)
    return per_step.mean(axis=0), per_step


def write_protocol(store: ResultsStore, spec: ProtocolSpec = ProtocolSpec()) -> ProtocolRecord:
    """Write the runs of one protocol into `store` (methods outermost, as a sweep runs them), in one
    transaction; the metrics are mtlbench.task_metrics' (scikit-learn, its argument checks skipped for speed)."""
    with store.transaction(immediate=True), sklearn.config_context(skip_parameter_validation=True):
        return _write(store, spec)


def _write(store: ResultsStore, spec: ProtocolSpec) -> ProtocolRecord:
    rng = np.random.default_rng([spec.data_seed, 1])
    first = 10_000 * (spec.data_seed + 1)
    test_ids, test_patients = _ids_and_patients(spec.test_patients, first, rng, spec.nih_names)
    val_ids, val_patients = _ids_and_patients(spec.val_patients, first + 5_000, rng, spec.nih_names)
    stored_patients = {
        "val": [str(p) for p in val_patients] if spec.store_patients else None,
        "test": [str(p) for p in test_patients] if spec.store_patients else None,
    }
    test_labels = _labels(len(test_ids), spec.test_positives, rng)
    record = ProtocolRecord(
        spec, test_ids, test_patients, test_labels, val_ids, _labels(len(val_ids), spec.val_positives, rng)
    )
    tasks = TASK_NAMES
    owner = Owner(host="fixture-host", pid=1, token="fixture")
    for mi, method in enumerate(spec.methods):
        for seed in spec.seeds:
            config = _config(spec, method, seed)
            built = _method(config)
            stored = dict(json.loads(config.to_json()), method_params=built.hyperparameters())
            claim = store.claim_run(
                RunKey(method, spec.dataset, seed, config.config_hash()),
                json.dumps(stored, sort_keys=True),
                {"mtlbench": "fixture", "git_commit": "fixture", "torch": "fixture", "device": spec.device},
                built.weight_scale,
                owner,
            )
            rid = claim.run_id
            info = {"name": spec.dataset, "fingerprint": config.data_fingerprint}
            store.set_data_info(rid, {**info, "image_split": spec.split_info} if spec.split_info else info)
            key = (method, seed)
            record.run_ids[key], record.config_json[key] = rid, stored
            kind, source = spec.scores.get(method, DEFAULT_SCORE), method
            if isinstance(kind, str) and kind in spec.scores:  # another method's probabilities, draw for draw
                kind, source = spec.scores[kind], kind
            run_rng = np.random.default_rng([spec.data_seed, *source.encode(), seed])
            weight_rng = np.random.default_rng([spec.data_seed, mi, seed, 7])
            failure = spec.failures.get(key)
            epochs = failure.epochs_done if failure else spec.epochs
            val_by_epoch, best, best_score = [], 0, -np.inf
            for epoch in range(epochs):
                strength = (epoch + 1) / spec.epochs
                val_p = _probs(kind, record.val_labels, run_rng, strength)
                val = task_metrics(record.val_labels, val_p, bce(record.val_labels, val_p))
                val_by_epoch.append(val_p)
                train_loss = bce(record.val_labels, val_p) * (0.95 - 0.05 * epoch)
                train_acc = np.clip(val.accuracy + 0.01 * epoch, 0, 1)
                store.add_train_stats(rid, epoch, tasks, train_loss, train_acc)
                steps = list(range(epoch * spec.steps_per_epoch, (epoch + 1) * spec.steps_per_epoch))
                mean, per_step = _epoch_weights(method, built.weight_scale, epoch, steps, weight_rng)
                if mean is not None:
                    store.add_weights(rid, epoch, [-1], tasks, mean[None])
                if per_step is not None:
                    store.add_weights(rid, epoch, steps, tasks, per_step)
                store.add_metrics(rid, "val", epoch, tasks, val)
                score = float(np.nanmean(val.auroc))
                if score > best_score:  # best validation AUROC, the first epoch on ties (as the trainer)
                    best, best_score = epoch, score
            if failure is not None:
                if failure.status == "diverged":
                    store.set_diagnostics(rid, built.diagnostics())
                if failure.status == "oom":
                    store.set_costs(
                        rid,
                        {
                            k: v
                            for k, v in _costs(spec, method, seed).items()
                            if k in ("device", "peak_cuda_mb", "peak_rss_mb", "rss_scope")
                        },
                    )
                store.finish_run(rid, failure.status, diverged_step=failure.diverged_step, error=failure.error)
                record.status[key] = failure.status
                continue
            test_p = _probs(kind, record.test_labels, run_rng)
            test = task_metrics(record.test_labels, test_p, bce(record.test_labels, test_p))
            store.add_metrics(rid, "test", best, tasks, test)
            store.add_predictions(
                rid, "val", best, val_ids, record.val_labels, val_by_epoch[best], stored_patients["val"]
            )
            store.add_predictions(rid, "test", best, test_ids, record.test_labels, test_p, stored_patients["test"])
            costs = _costs(spec, method, seed)
            store.set_costs(rid, costs)
            store.set_diagnostics(rid, built.diagnostics())
            store.finish_run(rid, "complete", selected_epoch=best)
            record.status[key] = "complete"
            record.test_probs[key], record.val_probs[key] = test_p, val_by_epoch[best]
            record.selected_epoch[key], record.costs[key] = best, costs
    return record


def build_results(path: Path, *specs: ProtocolSpec) -> list[ProtocolRecord]:
    """A results database at `path` holding one protocol per spec (default: one ProtocolSpec())."""
    with ResultsStore(path) as store:
        return [write_protocol(store, spec) for spec in (specs or (ProtocolSpec(),))]
