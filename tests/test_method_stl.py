"""stl, the single-task baseline: task subsets, the data a run sees, the sweep's cells, and the report's joined row
(its predictions, costs and Δm% against it, checked against the stored runs and the closed form)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from mtlbench.config import RunConfig, build_config
from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.stl import SingleTask, check_single_task
from mtlbench.plan import SweepPlan, method_sets, parse_methods
from mtlbench.report.leaderboard import leaderboard
from mtlbench.report.load import load_protocols
from mtlbench.report.table import display_table
from mtlbench.results.store import ResultsStore
from mtlbench.tasks import TASK_NAMES, task_subset
from mtlbench.training import train_run
from tests.tiny_model import tiny_model

CFG = replace(build_config("smoke"), device="cpu", epochs=1, batch_size=16)


def test_task_subset_reads_names_in_task_order_and_refuses_unknown_or_repeated_ones():
    assert task_subset("") == TASK_NAMES
    assert task_subset("Hernia, Atelectasis") == ("Atelectasis", "Hernia")
    with pytest.raises(UserError, match="unknown task.*'Hernai' in --tasks; valid: Atelectasis"):
        task_subset("Hernai")
    with pytest.raises(UserError, match="names a task twice"):
        task_subset("Mass,Mass")
    with pytest.raises(UserError, match="unknown task"):
        build_config("smoke", [({"tasks": "Mass,"}, "test")])


def test_the_tasks_field_changes_no_earlier_cell_and_is_its_own_cell_when_set():
    assert "tasks" not in RunConfig().hashed_fields()  # runs stored before the field keep their identity
    assert replace(RunConfig(), tasks="Mass").config_hash() != RunConfig().config_hash()
    assert replace(RunConfig(), tasks="Mass").config_hash() != replace(RunConfig(), tasks="Nodule").config_hash()


def test_stl_weights_its_one_task_by_one_and_refuses_several():
    out = SingleTask(("Mass",)).step(StepContext(torch.tensor([0.7]), 0, 0))
    assert out.weights.tolist() == [1.0] and out.objective is None and out.shared_grad is None
    check_single_task("stl", ("Mass",))
    check_single_task("ew", TASK_NAMES)
    with pytest.raises(UserError, match="stl trains one task per run, not 14: use `mtlbench run --stl`"):
        check_single_task("stl", TASK_NAMES)


def test_stl_is_in_no_method_set_and_only_runs_through_the_stl_flag():
    assert all("stl" not in names for names in method_sets().values())
    with pytest.raises(UserError, match="add it with --stl"):
        parse_methods("ew,stl")
    plan = SweepPlan(CFG, ("ew", "deepchest"), (0, 1), {}, stl=True)
    cells = plan.cells()
    assert [(c.method, c.seed, c.tasks) for c in cells[28:]] == [
        ("ew", 0, ""),
        ("ew", 1, ""),
        ("deepchest", 0, ""),
        ("deepchest", 1, ""),
    ]
    assert [(c.method, c.seed, c.tasks) for c in cells[:28]] == [("stl", s, t) for s in (0, 1) for t in TASK_NAMES]
    assert len(SweepPlan(CFG, ("ew",), (0,), {}).cells()) == 1


def test_restricted_bundle_keeps_the_images_and_the_tasks_label_columns(toy_bundle):
    one = toy_bundle.restricted(("Effusion",))
    assert one.task_names == ("Effusion",)
    for name, split in one.splits().items():
        whole = toy_bundle.splits()[name]
        assert split.labels.shape == (len(whole), 1) and split.pixels is whole.pixels
        assert (split.labels[:, 0] == whole.labels[:, TASK_NAMES.index("Effusion")]).all()
    assert toy_bundle.restricted(TASK_NAMES) is toy_bundle


def _train(store, toy_bundle, method, seed=0, tasks=""):
    out = train_run(
        replace(CFG, method=method, seed=seed, tasks=tasks), toy_bundle, store, {}, model_factory=tiny_model
    )
    assert out.status == "complete", out.detail
    return out.run_id


def test_a_single_task_run_trains_and_stores_its_one_task(tmp_path, toy_bundle):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        run_id = _train(store, toy_bundle, "stl", tasks="Effusion")
        tasks = {r["task"] for r in store.query("SELECT task FROM metrics WHERE run_id=?", (run_id,))}
        _, labels, probs = store.predictions(run_id, "test")
    assert tasks == {"Effusion"} and labels.shape == probs.shape == (len(toy_bundle.test), 1)
    assert (labels[:, 0] == toy_bundle.test.labels[:, TASK_NAMES.index("Effusion")]).all()


@pytest.fixture(scope="module")
def stl_database(tmp_path_factory):
    """EW and a complete set of single-task runs for seed 0; seed 1 lacks Hernia's run."""
    from tests.conftest import make_bundle

    bundle = make_bundle()
    path = tmp_path_factory.mktemp("stl") / "r.sqlite"
    with ResultsStore(path) as store:
        for seed in (0, 1):
            _train(store, bundle, "ew", seed)
        members = {t: _train(store, bundle, "stl", 0, t) for t in TASK_NAMES}
        for t in TASK_NAMES[:-1]:
            _train(store, bundle, "stl", 1, t)
    return path, members


def test_the_report_joins_each_seeds_single_task_runs_into_one_stl_run(stl_database):
    path, members = stl_database
    (protocol,) = load_protocols(path)
    runs = protocol.runs.set_index(["variant", "seed"])
    assert sorted(runs.index) == [("ew", 0), ("ew", 1), ("stl", 0), ("stl", 1)]
    assert runs.loc[("stl", 0), "status"] == "complete"
    assert runs.loc[("stl", 1), "status"] == "failed" and "Hernia: no run" in runs.loc[("stl", 1), "error"]
    joined = int(runs.loc[("stl", 0), "run_id"])
    with ResultsStore(path) as store:
        stored = {t: store.predictions(rid, "test") for t, rid in members.items()}
        costs = {t: dict(store.query("SELECT * FROM costs WHERE run_id=?", (rid,))[0]) for t, rid in members.items()}
    ids, labels, probs = protocol.predictions[(joined, "test")]
    assert list(ids) == list(stored["Atelectasis"][0])
    assert np.array_equal(probs, np.concatenate([stored[t][2] for t in TASK_NAMES], axis=1))
    assert np.array_equal(labels, np.concatenate([stored[t][1] for t in TASK_NAMES], axis=1))
    cost = protocol.costs.set_index("run_id").loc[joined]
    assert cost["train_s"] == pytest.approx(sum(c["train_s"] for c in costs.values()), rel=1e-12)
    assert cost["images_per_s"] == pytest.approx(1 / sum(1 / c["images_per_s"] for c in costs.values()), rel=1e-12)
    assert cost["peak_rss_mb"] == max(c["peak_rss_mb"] for c in costs.values())
    assert list(protocol.test[protocol.test["run_id"] == joined]["task"]) == list(TASK_NAMES)
    assert protocol.weights["run_id"].isin(members.values()).sum() == 0


def test_delta_m_is_measured_against_stl_beside_ew_where_stl_ran(stl_database):
    path, _ = stl_database
    (protocol,) = load_protocols(path)
    board = leaderboard(protocol, resamples=50, min_positives=1)
    frame = board.frame.set_index(["variant", "metric"])
    assert frame.at[("ew", "delta_m_stl_pct"), "reference"] == "stl" and ("stl", "delta_m_stl_pct") not in frame.index
    assert (
        frame.at[("stl", "delta_m_pct"), "reference"] == "ew" and frame.at[("stl", "delta_auroc"), "reference"] == "ew"
    )
    table = display_table(board)
    assert "Δm% vs STL" in table.columns and "Δm% vs EW" in table.columns
    assert table.set_index("method").at["stl", "Δm% vs STL"] == "—"
    # the closed form on seed 0, the seed both have: 100 × mean over tasks and metrics of (m − m_STL)/m_STL
    runs = protocol.runs.set_index(["variant", "seed"])["run_id"]
    mine, theirs = (protocol.predictions[(int(runs.loc[(v, 0)]), "test")] for v in ("ew", "stl"))
    labels = mine[1]
    terms = [
        (score(labels[:, t], mine[2][:, t]) - score(labels[:, t], theirs[2][:, t]))
        / score(labels[:, t], theirs[2][:, t])
        for t in np.flatnonzero(board.eligible)
        for score in (roc_auc_score, average_precision_score)
    ]
    assert frame.at[("ew", "delta_m_stl_pct"), "value"] == pytest.approx(100 * np.mean(terms), rel=1e-9)


def test_without_single_task_runs_there_is_no_stl_column(results_db):
    (protocol, *_) = load_protocols(results_db[0])
    board = leaderboard(protocol, resamples=20)
    assert "delta_m_stl_pct" not in set(board.frame["metric"])
    assert "Δm% vs STL" not in display_table(board).columns


def test_stl_with_a_task_subset_is_refused_in_one_line(capsys, tmp_path):
    from mtlbench.cli import main

    assert main(["run", "--stl", "--tasks", "Mass", "--results", str(tmp_path / "r.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--stl trains each of the 14 tasks on its own" in err
    assert not (tmp_path / "r.sqlite").exists()


def test_deepchest_init_stl_reads_the_single_task_runs_validation_accuracy(stl_database):
    """Validation accuracy at each single-task run's selected epoch, averaged over the seeds that have the task."""
    from mtlbench.results import readers
    from mtlbench.single_task_init import with_single_task_init

    path, _ = stl_database
    with ResultsStore(path) as store:
        rows = readers.single_task_validation(store)
        (fingerprint,) = {json.loads(c)["data_fingerprint"] for c in rows["config_json"]}
        cell = replace(CFG, method="deepchest", method_params={"init": "stl"}, data_fingerprint=fingerprint)
        filled = with_single_task_init(cell, store)
        assert with_single_task_init(replace(cell, method_params={}), store).method_params == {}
        with pytest.raises(UserError, match="none for Atelectasis, .*: add --stl"):
            with_single_task_init(replace(cell, epochs=2), store)  # another protocol: its own single-task runs
        selected = {r["run_id"]: r["selected_epoch"] for r in store.query("SELECT run_id, selected_epoch FROM runs")}
        val = store.query("SELECT run_id, task, epoch, accuracy FROM metrics WHERE split='val'")
    expected = {
        t: np.mean([r["accuracy"] for r in val if r["task"] == t and r["epoch"] == selected[r["run_id"]]
                    and r["run_id"] in set(rows["run_id"])])
        for t in TASK_NAMES
    }  # fmt: skip
    got = [float(v) for v in filled.method_params["stl_accuracies"].split(",")]
    assert got == pytest.approx([expected[t] for t in TASK_NAMES], rel=1e-12)
    assert sorted(rows.groupby("task").size().tolist()) == [1] + [2] * 13  # seed 1 lacks Hernia's run


def test_the_cell_limit_counts_the_single_task_runs():
    from mtlbench.plan import check_cell_count

    check_cell_count(("ew",), tuple(range(600)), stl=True)  # 15 × 600 = 9,000
    with pytest.raises(UserError, match=r"is \(1 \+ 14 single-task\) × 700 = 10,500 runs"):
        check_cell_count(("ew",), tuple(range(700)), stl=True)
