"""Read a results database into pandas frames, one protocol at a time.

A *protocol* is everything in a run's config but the method, its hyperparameters and the seed:
runs of one protocol are comparable. Within a protocol a *variant* is a method with one set of
hyperparameters (`deepchest` or `deepchest[signal=val-accuracy]`); its runs differ only by seed.

Tuned runs (`mtlbench tune`, the tuning table) are shown by `tuned_view`: a trial is never shown
(only the Tuning section lists it, with its validation AUROC); the final runs of a selected
configuration form a protocol of their own, in which the searched settings read "tuned" and the
budget is part of the protocol (methods tuned with different budgets are never compared), and
their variant is named by the selected configuration (`ew[lr=0.003,weight_decay=0.0001]`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mtlbench.config import DATASET_FIELDS, LEGACY_VALUES, UNHASHED_FIELDS
from mtlbench.errors import UserError
from mtlbench.methods.params import PARAMS_ADDED_LATER, SINGLE_TASK  # single-task runs: report/single_task.py
from mtlbench.tasks import TASK_NAMES
from mtlbench.results import readers
from mtlbench.results.store import ResultsStore
from mtlbench.results.check import check_intact
from mtlbench.tuning import Point

# Fields that differ between runs of one protocol: the method and its settings, the seed, and the
# per-task gradient engine, which `auto` resolves per method (batched or loop give the same
# numbers; the choice is a cost, and costs are compared per method anyway).
PER_RUN_FIELDS = ("method", "method_params", "method_version", "seed", "grad_engine")
TUNED = "tuned"  # what a searched setting reads in a tuned protocol's config


@dataclass
class Protocol:
    """The runs of one protocol and everything stored for them."""

    key: str
    config: dict
    runs: pd.DataFrame  # one row per run: run_id, variant, method, seed, status, error, ...
    test: pd.DataFrame  # run_id, task, loss, accuracy, auroc, ap (complete runs, selected epoch)
    curves: pd.DataFrame  # run_id, split (train/val), epoch, task, loss
    weights: pd.DataFrame  # run_id, epoch, task, weight (epoch means)
    costs: pd.DataFrame  # run_id, device, wall_s, train_s, median_step_s, images_per_s, peak_cuda_mb, peak_rss_mb
    predictions: dict[tuple[int, str], tuple[list[str], np.ndarray, np.ndarray]] = field(repr=False)
    epochs: int = 0
    patients: dict[tuple[int, str], list[str]] = field(default_factory=dict, repr=False)  # stored since schema 6
    split_info: dict = field(default_factory=dict)  # `--split random-image`'s sizes and leak (image_split.py)
    cross_tests: pd.DataFrame = field(default_factory=pd.DataFrame)  # `--test-dataset` (readers.cross_tests)

    @property
    def dataset(self) -> str:
        """The dataset of this protocol."""
        return str(self.config.get("dataset"))

    def complete(self) -> pd.DataFrame:
        """Runs with status complete."""
        return self.runs[self.runs["status"] == "complete"]

    def tasks(self) -> list[str]:
        """The task names in the dataset's order (the columns of the stored predictions)."""
        stored = list(dict.fromkeys(self.test["task"])) if not self.test.empty else []
        return list(TASK_NAMES) if set(stored) == set(TASK_NAMES) else stored

    def variants(self) -> list[str]:
        """Variant names in a stable order: EW first, then as first run."""
        names = list(dict.fromkeys(self.runs.sort_values("run_id")["variant"]))
        return sorted(names, key=lambda v: (v.split("[")[0] != "ew", names.index(v)))

    def reference_variant(self, reference: str) -> str:
        """The variant that comparisons against the method `reference` use: `reference` itself, or the
        method's one variant here (a tuned method's variant is named by its selected configuration)."""
        variants = self.variants()
        if reference in variants:
            return reference
        named = [v for v in variants if v.split("[")[0] == reference]
        return named[0] if len(named) == 1 else reference


def protocol_key(config: dict) -> str:
    """Short hash of a config without the per-run fields (and without paths, and without the fields
    its dataset does not read that older runs lack: see config.DATASET_FIELDS)."""
    unread = {k for k, datasets in DATASET_FIELDS.items() if config.get("dataset") not in datasets}
    shared = {k: v for k, v in shared_fields(config).items() if k not in unread}
    return hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()[:10]


def shared_fields(config: dict) -> dict:
    """A run's config without its per-run fields and paths: what every run of its protocol shares. A single-task
    run (method `stl`) trains one of the tasks of the multi-task runs it is compared with: it reads as theirs."""
    shared = {k: v for k, v in config.items() if k not in PER_RUN_FIELDS and k not in UNHASHED_FIELDS}
    if config.get("method") == SINGLE_TASK and "tasks" in shared:
        shared["tasks"] = LEGACY_VALUES["tasks"]
    return shared


def variant_names(configs: list[dict]) -> list[str]:
    """Each run's variant label, from the stored (resolved) hyperparameters alone: `method` when all
    of the method's runs here share one setting, else `method[k=v,...]` with the settings that
    differ between them (and `v2` where the method's version does). Never compared to the code's
    current defaults, which may have changed since the runs were stored."""
    settings = [{**(c.get("method_params") or {}), "version": c.get("method_version")} for c in configs]
    keys: dict[str, set[str]] = {}
    for c, s in zip(configs, settings):
        keys.setdefault(c["method"], set()).update(s)
    values: dict[tuple[str, str], set[str]] = {}  # (method, setting) → the distinct values stored
    for c, s in zip(configs, settings):
        for k in keys[c["method"]]:
            values.setdefault((c["method"], k), set()).add(json.dumps(s.get(k), default=str))
    labels = []
    for c, s in zip(configs, settings):
        varying = sorted(k for k in keys[c["method"]] if len(values[(c["method"], k)]) > 1)
        parts = [f"v{s.get(k)}" if k == "version" else f"{k}={s.get(k)}" for k in varying]
        labels.append(f"{c['method']}[{','.join(parts)}]" if parts else c["method"])
    return labels


def load_protocols(
    path: Path, dataset: str | None = None, methods: list[str] | None = None, reference: str | None = None
) -> list[Protocol]:
    """Every protocol in the database at `path` (optionally one dataset, some methods), largest first.
    With a `reference` method, the database must hold finished runs of it, and they are always loaded.
    Each seed's single-task runs are one run of variant `stl` (`single_task.join_single_task_runs`)."""
    from mtlbench.report.single_task import join_single_task_runs  # it reads Protocol from here

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no results database at {path}; run `mtlbench run` first or pass --results")
    with ResultsStore(path) as store:
        check_intact(store)
        runs = readers.finished_runs(store)
        if runs.empty:
            raise UserError(f"{path} holds no finished runs; run `mtlbench run` first")
        runs = tuned_view(runs, readers.tuning_rows(store))
        if runs.empty:
            raise UserError(
                f"{path} holds only tuning trials, whose test metrics are never shown; rerun the same "
                "`mtlbench tune` command to run the selected configurations"
            )
        runs = select_runs(path, runs, dataset, methods, reference)
        configs = [protocol_config(r.config_json, r.tuned) for r in runs.itertuples()]
        plain = [not isinstance(t, str) for t in runs["tuned"]]
        names = iter(variant_names([c for c, p in zip(configs, plain) if p]))
        runs = runs.assign(
            tasks=[str(c.get("tasks", "")) for c in configs],
            protocol=[protocol_key(c) for c in configs],
            variant=[
                next(names) if p else tuned_variant(m, t) for m, t, p in zip(runs["method"], runs["tuned"], plain)
            ],
        )
        protocols = []
        for key, group in runs.groupby("protocol", sort=False):
            protocol = _read_protocol(store, key, group, configs[runs.index.get_loc(group.index[0])])
            protocols.append(join_single_task_runs(protocol))
    return sorted(protocols, key=lambda p: -len(p.runs))


def tuned_view(runs: pd.DataFrame, tuning: pd.DataFrame) -> pd.DataFrame:
    """The runs the report shows, with a `tuned` column: for the final run of a tuned method's
    selected configuration, a JSON text {values, budget, trial_seed} (once per budget and trial seed
    it was selected with), else NaN. A tuning trial that is not also such a final run is left out:
    its test metrics are never shown."""
    runs = runs.assign(tuned=np.nan)
    if tuning.empty:
        return runs.reset_index(drop=True)
    finals = tuning[tuning["role"] == "final"].drop_duplicates(["config_hash", "budget", "trial_seed"])
    trials = set(tuning.loc[tuning["role"] == "trial", "config_hash"])
    described = finals.assign(
        tuned=[
            json.dumps({"values": json.loads(v), "budget": int(b), "trial_seed": int(s)}, sort_keys=True)
            for v, b, s in zip(finals["values_json"], finals["budget"], finals["trial_seed"])
        ]
    )
    tuned = runs.drop(columns="tuned").merge(described[["config_hash", "tuned"]], on="config_hash")
    plain = runs[~runs["config_hash"].isin(trials | set(finals["config_hash"]))]
    return pd.concat([plain, tuned]).sort_values(["run_id", "tuned"], na_position="first").reset_index(drop=True)


def protocol_config(config_json: str, tuned: object) -> dict:
    """A run's stored config (older runs lack newer fields: their legacy values fill them in); for a
    tuned run (`tuned_view`), the searched settings read TUNED and `tuning` names the budget."""
    config = {**LEGACY_VALUES, **json.loads(config_json)}
    later = PARAMS_ADDED_LATER.get(config.get("method"), {})
    config["method_params"] = {**later, **(config.get("method_params") or {})}
    if isinstance(tuned, str):
        info = json.loads(tuned)
        config.update({k: TUNED for k in info["values"].get("config", {})})
        config["tuning"] = f"{info['budget']} trials per method, trial seed {info['trial_seed']}"
    return config


def tuned_variant(method: str, tuned: str) -> str:
    """`method[lr=0.003,weight_decay=0.0001,…]`: the variant name of a tuned run, its selected configuration."""
    point = Point.from_json(json.dumps(json.loads(tuned)["values"]))
    return f"{method}[{point.label(method).replace(', ', ',')}]"


def select_runs(
    path: Path, runs: pd.DataFrame, dataset: str | None, methods: list[str] | None, reference: str | None = None
) -> pd.DataFrame:
    """The runs of `dataset` and `methods` (None: all) and of the `reference` method; a UserError listing
    what the database holds when the dataset, any one of the methods, or the reference has no finished run."""
    chosen = runs if dataset is None else runs[runs["dataset"] == dataset]
    held = set(chosen["method"])
    absent = [m for m in methods or [] if m not in held]
    no_reference = reference is not None and not chosen.empty and reference not in held and reference not in absent
    if chosen.empty or absent or no_reference:
        wanted = " or".join(
            ([f" of method(s) {', '.join(map(repr, absent))}"] if absent else [])
            + ([f" of the reference method {reference!r} (--reference)"] if no_reference else [])
        ) + (f" on dataset {dataset!r}" if dataset is not None else "")
        holds = "; ".join(
            ", ".join(f"{m} ({n})" for m, n in group["method"].value_counts(sort=False).items()) + f" on {name}"
            for name, group in runs.groupby("dataset", sort=True)
        )
        raise UserError(f"{path} holds no finished runs{wanted}; it holds finished runs of {holds}")
    return chosen if not methods else chosen[chosen["method"].isin([*methods, *([reference] if reference else [])])]


def _read_protocol(store: ResultsStore, key: str, runs: pd.DataFrame, config: dict) -> Protocol:
    ids = tuple(int(i) for i in runs["run_id"])
    test = readers.metrics_on_test(store, ids)
    curves = readers.epoch_losses(store, ids)
    weights = readers.epoch_weights(store, ids)
    costs = readers.run_costs(store, ids)
    complete = runs[runs["status"] == "complete"]["run_id"].astype(int).tolist()
    predictions, patients = {}, {}
    for run_id in complete:
        for split in ("val", "test"):
            stored = store.predictions(run_id, split)
            if stored is not None:
                predictions[(run_id, split)] = stored
                ids = store.patient_ids(run_id, split)
                if ids is not None:
                    patients[(run_id, split)] = ids
    return Protocol(
        key,
        shared_fields(config),
        runs.drop(columns=["config_json", "tuned"]).reset_index(drop=True),
        test,
        curves,
        weights,
        costs,
        predictions,
        int(config.get("epochs", 0)),
        patients,
        readers.split_info(store, complete),
        readers.cross_tests(store, complete),
    )
