"""`mtlbench tune` end to end: trials, the selection on validation, the selection × seeds, rerun, report.

The end-to-end tests run the issue's acceptance command (two methods, 4 trials, seeds 0,1, smoke
preset) with the two-conv tiny model (tests/tiny_model.py) on 120 images, and once as a user types
it (ResNet18). Both are `slow` (about 21 s of CPU for the tiny model's 12 runs and the data, before the
rerun and the report). The fast tests need no training: the selection rule and the report's filter
on a database built by hand, the dry run, the one-line errors.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mtlbench.training.state as state_mod
import mtlbench.training.step as step_mod
from mtlbench.cli import main
from mtlbench.config import build_config
from mtlbench.task_metrics import TaskMetrics
from mtlbench.report.load import load_protocols
from mtlbench.report.tuning import tuning_frame
from mtlbench.results.leases import Owner
from mtlbench.results.store import ResultsStore, RunKey
from mtlbench.tune import trial_outcomes
from mtlbench.tuning import plan_tune, select_trial
from tests.tiny_model import tiny_model

ACCEPTANCE = ["tune", "--methods", "ew,deepchest", "--trials", "4", "--seeds", "0,1", "--preset", "smoke"]


def _tune(root: Path, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    argv = [
        *ACCEPTANCE,
        "--synth-images",
        "120",
        "--quiet",
        "--results",
        str(root / "r.sqlite"),
        "--data-dir",
        str(root / "data"),
        *extra,
    ]
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def _sql(root: Path, sql: str) -> pd.DataFrame:
    with sqlite3.connect(root / "r.sqlite") as con:
        return pd.read_sql(sql, con)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """The acceptance command (two methods, 4 trials, seeds 0,1, smoke) with the tiny model, run twice."""
    root = tmp_path_factory.mktemp("tune")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state_mod, "build_model", tiny_model)  # every run's model
        patch.setattr(step_mod, "build_model", tiny_model)  # the warm-up's
        first = _tune(root)
        before = _sql(root, "SELECT run_id, config_hash, ended_at FROM runs ORDER BY run_id")
        second = _tune(root)
    return root, first, before, second


@pytest.mark.slow  # the acceptance command with the tiny model: ~21 s of CPU, see above
def test_tune_runs_the_trials_selects_on_validation_and_runs_the_selection_with_each_seed(tuned) -> None:
    root, (code, out), _, _ = tuned
    assert code == 0, out
    runs = _sql(root, "SELECT run_id, method, seed, status, config_hash, config_json FROM runs")
    assert (runs["status"] == "complete").all()
    assert sorted(map(tuple, runs[["method", "seed"]].values.tolist())) == sorted(
        [(m, 1000) for m in ("ew", "deepchest") for _ in range(4)]
        + [(m, s) for m in ("ew", "deepchest") for s in (0, 1)]
    )
    tuning = _sql(root, "SELECT * FROM tuning")
    val = _sql(
        root,
        "SELECT r.config_hash, AVG(m.auroc) AS val_auroc FROM runs r JOIN metrics m ON m.run_id = r.run_id"
        " AND m.split = 'val' AND m.epoch = r.selected_epoch GROUP BY r.config_hash",
    ).set_index("config_hash")
    for method in ("ew", "deepchest"):
        trials = tuning[(tuning["method"] == method) & (tuning["role"] == "trial")].sort_values("idx")
        assert trials["idx"].tolist() == [0, 1, 2, 3] and trials["budget"].eq(4).all()
        assert trials["trial_seed"].eq(1000).all() and trials["selected"].sum() == 1
        scores = val.loc[trials["config_hash"], "val_auroc"].to_numpy()
        chosen = trials[trials["selected"] == 1].iloc[0]
        assert scores[int(chosen["idx"])] == scores.max()  # the best validation AUROC, read from the store
        finals = tuning[(tuning["method"] == method) & (tuning["role"] == "final")].sort_values("idx")
        assert finals["idx"].tolist() == [0, 1] and (finals["values_json"] == chosen["values_json"]).all()
        values = json.loads(chosen["values_json"])
        for h, seed in zip(finals["config_hash"], (0, 1)):
            config = json.loads(runs.loc[runs["config_hash"] == h, "config_json"].item())
            assert config["seed"] == seed and config["method"] == method
            assert {k: config[k] for k in values["config"]} == values["config"]
            assert {k: config["method_params"][k] for k in values["method_params"]} == values["method_params"]
        assert f"{method}: selected trial {int(chosen['idx']) + 1}/4" in out
    assert "mtlbench tune: ew, deepchest: 4 trial(s) each on seed 1000" in out
    assert "12 run(s)" in out


@pytest.mark.slow  # the acceptance command with the tiny model: ~21 s of CPU, see above
def test_a_rerun_skips_every_finished_trial_and_run(tuned) -> None:
    root, _, before, (code, out) = tuned
    assert code == 0, out
    after = _sql(root, "SELECT run_id, config_hash, ended_at FROM runs ORDER BY run_id")
    pd.testing.assert_frame_equal(before, after)  # nothing trained again, nothing rewritten
    assert "12 run(s) were already complete" in out
    assert len(_sql(root, "SELECT * FROM tuning")) == 2 * (4 + 2)


@pytest.mark.slow  # the acceptance command with the tiny model: ~21 s of CPU, see above
def test_the_report_shows_only_the_selected_configurations(tuned, tmp_path) -> None:
    root, *_ = tuned
    out = tmp_path / "report"
    with contextlib.redirect_stdout(io.StringIO()):
        assert (
            main(["report", "--results", str(root / "r.sqlite"), "--out", str(out), "--quiet", "--resamples", "100"])
            == 0
        )
    (csv,) = (out / "tables").glob("leaderboard_*.csv")
    frame = pd.read_csv(csv)
    selected = _sql(root, "SELECT method, values_json FROM tuning WHERE role='trial' AND selected=1")
    assert sorted(frame["variant"].unique()) == sorted(
        f"{m}[{','.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in {**json.loads(j)['config'], **json.loads(j)['method_params']}.items())}]"
        for m, j in zip(selected["method"], selected["values_json"])
    )
    complete = frame[frame["metric"] == "runs_complete"].set_index("variant")["value"]
    assert (complete == 2).all()  # the two final seeds; no trial's run feeds a row
    ratio = frame[frame["metric"] == "step_ratio"]  # compared against EW's selected configuration
    assert ratio["variant"].str.startswith("deepchest[").all() and ratio["reference"].str.startswith("ew[").all()
    assert len(ratio) == 1
    report = (out / "report.md").read_text()
    assert "## Tuning" in report and "lr=tuned" in report and "4 trials per method, trial seed 1000" in report
    trials = pd.read_csv(out / "tables" / "tuning.csv")
    assert len(trials) == 8 and trials["val_auroc"].notna().all() and trials["selected"].sum() == 2
    assert not any("test" in c for c in trials.columns)  # validation only


def test_dry_run_prints_each_space_and_trial_and_trains_nothing(tmp_path, capsys) -> None:
    assert main([*ACCEPTANCE, "--dry-run", "--results", str(tmp_path / "r.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "ew: lr ∈ {0.0001, 0.0003, 0.001, 0.003} × weight_decay ∈ {0, 0.0001, 0.001, 0.01}: 16 points" in out
    assert "trial 1: lr=0.001, weight_decay=0.0001 (the defaults)" in out
    assert out.count("    trial ") == 8 and "deepchest: " in out and "increase_factor ∈ {1.05, 1.1, 1.2}" in out
    assert not (tmp_path / "r.sqlite").exists()


def test_the_lite_preset_tunes_its_own_methods_unless_methods_are_given(tmp_path, capsys) -> None:
    from mtlbench.config import PRESET_SWEEPS

    assert main(["tune", "--preset", "lite", "--trials", "1", "--dry-run", "--results", str(tmp_path / "r")]) == 0
    tuned = capsys.readouterr().out.splitlines()[0].split(": ")[1].split(", ")
    assert tuned == PRESET_SWEEPS["lite"]["methods"].split(",")
    assert main(["tune", "--preset", "lite", "--methods", "ew", "--trials", "1", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("mtlbench tune: ew: 1 trial(s)")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "ew,nope", "--trials", "2"], "unknown method 'nope'; valid methods: "),
        (["--methods", "ew", "--trials", "0"], "--trials must be between 1 and 10,000, got 0"),
        (["--methods", "ew", "--trials", "-3"], "--trials must be between 1 and 10,000, got -3"),
        (["--methods", "ew"], "the following arguments are required: --trials"),
        (["--methods", "ew", "--trials", "two"], "argument --trials: invalid int value"),
        (
            ["--methods", "ew,pcgrad", "--trials", "2", "--lr", "0.001", "--weight-decay", "0"],
            "ew: nothing to tune: its search space is empty once --lr, --weight-decay are fixed",
        ),
        (
            ["--methods", "ew", "--trials", "2", "--param", "deepchest.signal=val-accuracy"],
            "--param deepchest.signal=val-accuracy: deepchest is not in --methods",
        ),
        (["--methods", "ew", "--trials", "2", "--trial-seed", "-1"], "--trial-seed must be between 0 and"),
        (["--methods", "ew", "--trials", "2", "--seeds", "x"], "--seeds 'x': expected integers"),
    ],
)
def test_user_errors_are_one_line(argv, message, capsys, tmp_path) -> None:
    code = main(["tune", *argv, "--results", str(tmp_path / "r.sqlite")])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.startswith("mtlbench: error: ") and err.count("\n") == 1
    assert not (tmp_path / "r.sqlite").exists()


def test_a_setting_fixed_on_the_command_line_is_not_searched(capsys, tmp_path) -> None:
    assert (
        main(["tune", "--methods", "cagrad", "--trials", "3", "--lr", "0.0003", "--param", "cagrad.c=0.7", "--dry-run"])
        == 0
    )
    out = capsys.readouterr().out
    assert "cagrad: weight_decay ∈ {0, 0.0001, 0.001, 0.01}: 4 points" in out
    assert "lr=" not in out.split("cagrad: ")[1] and "c=" not in out.split("cagrad: ")[1].replace("0.0", "")


# --- the selection rule and the report's filter, on a database built by hand ---------------------

TASKS = ("a", "b")


def _store_run(store: ResultsStore, config, val_auroc: float, test_auroc: float) -> int:
    """A complete run of `config` whose selected epoch 1 has the given validation and test AUROC."""
    run_id = store.claim_run(
        RunKey(config.method, config.dataset, config.seed, config.config_hash()),
        config.to_json(),
        {},
        "sum-to-T",
        Owner(),
    ).run_id
    for epoch, auroc in ((0, 0.5), (1, val_auroc)):
        store.add_metrics(run_id, "val", epoch, TASKS, TaskMetrics(*(np.full(2, x) for x in (0.3, 0.8, auroc, 0.4))))
    store.add_metrics(run_id, "test", 1, TASKS, TaskMetrics(*(np.full(2, x) for x in (0.3, 0.8, test_auroc, 0.4))))
    store.set_costs(
        run_id, {"device": "cpu", "wall_s": 1.0, "median_step_s": 0.1, "peak_rss_mb": 10.0, "rss_scope": "run"}
    )
    store.finish_run(run_id, "complete", selected_epoch=1)
    return run_id


def test_selection_takes_the_best_validation_auroc_even_when_its_test_auroc_is_worse(tmp_path) -> None:
    base = replace(build_config("smoke"), device="cpu", precision="fp32", data_fingerprint="toy")
    plan = plan_tune(base, ["ew"], [0, 1], 3, 1000, {})
    cells = plan.trial_cells("ew")
    hashes = [c.config_hash() for c in cells]
    # trial 1 has the best validation AUROC and the worst test AUROC; trial 2 the best test AUROC
    scores = [(0.60, 0.70), (0.75, 0.55), (0.65, 0.95)]
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        store.record_trials(
            plan.study("ew"),
            "ew",
            3,
            1000,
            [(i, h, p.to_json()) for i, (h, p) in enumerate(zip(hashes, plan.points["ew"]))],
        )
        for cell, (val, test) in zip(cells, scores):
            _store_run(store, cell, val, test)
        outcomes = trial_outcomes(store, hashes)
        assert [round(o.val_auroc, 2) for o in outcomes] == [0.60, 0.75, 0.65]  # the selected epoch's, not epoch 0's
        chosen = select_trial(outcomes)
        assert chosen.trial == 1
        with pytest.raises(Exception, match="holds only tuning trials"):
            load_protocols(path)  # nothing selected has run yet: no trial's test number is shown
        point = plan.points["ew"][chosen.trial]
        finals = plan.final_cells("ew", point)
        store.record_selection(
            plan.study("ew"), chosen.trial, [(c.seed, c.config_hash()) for c in finals], point.to_json()
        )
        final_ids = [_store_run(store, c, 0.7, 0.6) for c in finals]
        untuned = _store_run(store, replace(base, method="deepchest", seed=0), 0.6, 0.6)  # a plain run

    protocols = load_protocols(path)
    shown = {int(i) for p in protocols for i in p.runs["run_id"]}
    assert shown == {*final_ids, untuned}  # no trial, not even the selected one (its seed is not a final seed)
    (tuned,) = [p for p in protocols if p.config.get("lr") == "tuned"]
    assert set(tuned.runs["variant"]) == {f"ew[{point.label('ew').replace(', ', ',')}]"}
    assert tuned.reference_variant("ew") == f"ew[{point.label('ew').replace(', ', ',')}]"  # what Δ columns compare to
    assert tuned.config["tuning"] == "3 trials per method, trial seed 1000"
    assert set(tuned.test["run_id"]) == set(final_ids)
    trials = tuning_frame(path)
    assert trials["trial"].tolist() == [2, 3, 1]  # by validation AUROC, best first
    assert trials["selected"].tolist() == [True, False, False]
    assert trials["val_auroc"].round(2).tolist() == [0.75, 0.65, 0.60]


# --- the acceptance command, as typed -----------------------------------------------------


@pytest.mark.slow  # twelve ResNet18 runs on the smoke preset
def test_acceptance_command_with_the_real_model(tmp_path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            [*ACCEPTANCE, "--quiet", "--results", str(tmp_path / "r.sqlite"), "--data-dir", str(tmp_path / "data")]
        )
    assert code == 0, out.getvalue()
    tuning = _sql(tmp_path, "SELECT role, selected, COUNT(*) AS n FROM tuning GROUP BY role, selected")
    assert dict(zip(zip(tuning["role"], tuning["selected"]), tuning["n"])) == {
        ("trial", 0): 6,
        ("trial", 1): 2,
        ("final", 1): 4,
    }
    assert _sql(tmp_path, "SELECT COUNT(*) AS n FROM runs WHERE status='complete'")["n"].item() == 12


def test_the_authors_presets_method_settings_are_fixed_not_searched():
    from mtlbench.cli import build_parser
    from mtlbench.commands.tune import tune_plan_from

    def space(preset: str) -> list[str]:
        argv = f"tune --preset {preset} --methods uncertainty,ew --trials 2".split()
        return [d.name for d in tune_plan_from(build_parser().parse_args(argv)).spaces["uncertainty"].dimensions]

    assert space("paper") == ["lr", "weight_decay", "regularizer"]
    assert space("authors") == ["lr", "weight_decay"]  # regularizer=0.5 is the preset's, fixed
    argv = "tune --preset authors --methods uncertainty,ew --trials 2".split()
    trials = tune_plan_from(build_parser().parse_args(argv)).trial_cells("uncertainty")
    assert [c.method_params for c in trials] == [{"regularizer": 0.5}] * 2
