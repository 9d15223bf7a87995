"""The fixture database (tests/results_fixture.py) is one that `mtlbench run` could have written."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import replace

import numpy as np
import pytest

from mtlbench.config import RunConfig
from mtlbench.task_metrics import task_metrics
from mtlbench.report.leaderboard import patient_of
from mtlbench.report.load import load_protocols
from mtlbench.results.check import check_intact
from mtlbench.results.store import ResultsStore
from mtlbench.tasks import TASK_NAMES
from tests.results_fixture import METHODS, TEST_POSITIVES, VAL_POSITIVES, ProtocolSpec, bce, build_results


def test_it_is_intact_and_one_protocol_of_the_expected_runs(results_db) -> None:
    path, record = results_db
    with ResultsStore(path) as store:
        check_intact(store)
        runs = [tuple(r) for r in store.query("SELECT method, seed, status FROM runs ORDER BY run_id")]
    assert runs == [(m, s, record.status[(m, s)]) for m in METHODS for s in (0, 1, 2)]
    assert {k: v for k, v in record.status.items() if v != "complete"} == {
        ("mgda", 2): "diverged",
        ("graddrop", 2): "failed",
    }
    [protocol] = load_protocols(path)
    assert protocol.variants() == list(METHODS) and protocol.tasks() == list(TASK_NAMES)
    assert protocol.epochs == 3 and protocol.config["device"] == "cpu"
    assert len(protocol.predictions) == 2 * 13  # val and test of each complete run


def test_stored_configs_are_real_run_configs_with_their_identity(results_db) -> None:
    path, record = results_db
    with ResultsStore(path) as store:
        rows = store.query("SELECT method, seed, config_hash, config_json FROM runs")
    for row in rows:
        stored = json.loads(row["config_json"])
        config = RunConfig(**{k: v for k, v in stored.items() if k != "method_version"})
        assert config.config_hash() == row["config_hash"] and (config.method, config.seed) == (
            row["method"],
            row["seed"],
        )
        assert stored == record.config_json[(row["method"], row["seed"])]


def test_labels_have_the_stated_positives_and_patients_parse_from_the_image_ids(results_db) -> None:
    path, record = results_db
    assert dict(zip(TASK_NAMES, record.test_labels.sum(axis=0).tolist())) == TEST_POSITIVES
    assert dict(zip(TASK_NAMES, record.val_labels.sum(axis=0).tolist())) == VAL_POSITIVES
    patients = np.array([int(patient_of(i)) for i in record.test_ids])
    assert np.array_equal(patients, record.test_patients)
    assert len(np.unique(patients)) == record.spec.test_patients < len(record.test_ids)  # several images each
    with ResultsStore(path) as store:
        ids, labels, _ = store.predictions(record.run_ids[("ew", 0)], "test")
        stored = store.patient_ids(record.run_ids[("ew", 0)], "test")
    assert ids == record.test_ids and np.array_equal(labels, record.test_labels)
    assert stored == [str(p) for p in record.test_patients]  # stored with the predictions (schema 6)


@pytest.mark.parametrize(
    "store_patients, nih_names, patients",
    [
        (True, False, 120),  # stored ids cluster images whose names say nothing
        (False, True, 120),  # no stored ids: the patient an NIH name encodes
        (False, False, 359),  # neither: each image its own cluster
    ],
)
def test_the_bootstrap_clusters_on_the_patients_it_can_know(tmp_path, store_patients, nih_names, patients) -> None:
    from mtlbench.report.leaderboard import leaderboard

    spec = replace(
        ProtocolSpec(), methods=("ew",), seeds=(0,), failures={}, store_patients=store_patients, nih_names=nih_names
    )
    [record] = build_results(tmp_path / "r.sqlite", spec)
    assert len(record.test_ids) == 359 and len(set(record.test_patients)) == 120
    [protocol] = load_protocols(tmp_path / "r.sqlite")
    assert leaderboard(protocol, resamples=100).patients == patients


def test_stored_metrics_are_those_of_the_stored_predictions(results_db) -> None:
    path, record = results_db
    with closing(sqlite3.connect(path)) as con:
        for (method, seed), rid in record.run_ids.items():
            if record.status[(method, seed)] != "complete":
                continue
            rows = con.execute(
                "SELECT task, epoch, loss, accuracy, auroc, ap FROM metrics WHERE run_id=? AND split='test'", (rid,)
            ).fetchall()
            rows.sort(key=lambda r: TASK_NAMES.index(r[0]))
            probs = record.test_probs[(method, seed)]
            want = task_metrics(record.test_labels, probs, bce(record.test_labels, probs))
            assert [r[0] for r in rows] == list(TASK_NAMES)
            assert {r[1] for r in rows} == {record.selected_epoch[(method, seed)]}
            got = np.array([r[2:] for r in rows], dtype=float)
            assert np.allclose(got, np.stack([want.loss, want.accuracy, want.auroc, want.ap], axis=1), rtol=1e-12)


def test_scores_are_of_their_kind(results_db) -> None:
    _, record = results_db
    for seed in (0, 1, 2):
        pcgrad = task_metrics(record.test_labels, record.test_probs[("pcgrad", seed)], np.zeros(14))
        assert np.all(pcgrad.auroc == 1) and np.all(pcgrad.accuracy == 1)
        assert pcgrad.ap == pytest.approx(np.ones(14), rel=1e-12)  # scikit-learn's sum lands a rounding short
    for seed in (0, 1):  # graddrop's runs hold EW's probabilities, val and test
        assert np.array_equal(record.test_probs[("graddrop", seed)], record.test_probs[("ew", seed)])
        assert np.array_equal(record.val_probs[("graddrop", seed)], record.val_probs[("ew", seed)])
    assert not np.array_equal(record.test_probs[("ew", 0)], record.test_probs[("ew", 1)])  # seeds differ


def test_weights_are_logged_as_the_trainer_logs_them(results_db) -> None:
    path, record = results_db
    with closing(sqlite3.connect(path)) as con:

        def rows(method: str, seed: int = 0) -> list[tuple]:
            return con.execute(
                "SELECT epoch, step, weight FROM weights WHERE run_id=? ORDER BY epoch, step",
                (record.run_ids[(method, seed)],),
            ).fetchall()

        assert rows("graddrop") == []  # no weights at all
        assert rows("ew") == [(e, -1, 1.0) for e in range(3) for _ in TASK_NAMES]
        assert [(e, s) for e, s, _ in rows("deepchest")] == [(e, -1) for e in range(3) for _ in TASK_NAMES]
        pcgrad = np.array(rows("pcgrad"))
        assert sorted(set(pcgrad[:, 1].astype(int))) == [-1, *range(30)]  # epoch means and 10 steps per epoch
        for epoch in range(3):
            steps = pcgrad[(pcgrad[:, 0] == epoch) & (pcgrad[:, 1] >= 0), 2].reshape(10, 14)
            mean = pcgrad[(pcgrad[:, 0] == epoch) & (pcgrad[:, 1] == -1), 2]
            assert np.allclose(steps.sum(axis=1), 14) and np.allclose(steps.mean(axis=0), mean)
        assert len(rows("mgda", 2)) == 14 * 11  # the diverged run logged its first epoch


def test_one_cuda_sweep_is_one_protocol(tmp_path) -> None:
    spec = replace(
        ProtocolSpec(),
        methods=("ew", "mgda-ub"),
        seeds=(0,),
        device="cuda",
        failures={},
        scores={"ew": "noise", "mgda-ub": 0.5},
    )
    build_results(tmp_path / "r.sqlite", spec)
    assert len(load_protocols(tmp_path / "r.sqlite")) == 1
