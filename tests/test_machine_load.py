"""Costs on a shared machine: the other-load signal (closed-form inputs) and how the report, the paper
check and the end-of-run summary leave out timings marked unreliable (a database written here, no training)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from mtlbench import machine_load
from mtlbench.machine_load import (
    LOADED_SHARE,
    MIN_LOAD_WINDOW_S,
    CpuSample,
    LoadMeter,
    busy_ticks,
    other_cpu_seconds,
    other_load,
    own_ticks,
    timing_reliability,
)
from mtlbench.task_metrics import TaskMetrics
from mtlbench.report.leaderboard import leaderboard
from mtlbench.report.per_run import TIMING_MARK, timed_runs
from mtlbench.report.load import load_protocols
from mtlbench.report.paper_check import check_claims
from mtlbench.report.table import display_table, table_notes
from mtlbench.results.leases import Owner
from mtlbench.results.store import ResultsStore, RunKey
from mtlbench.tasks import TASK_NAMES
from tests.configs import cpu_smoke_config

PROC_STAT = """cpu  900 10 300 5000 40 5 6 7 0 0
cpu0 400 5 100 2500 20 2 3 4 0 0
cpu1 500 5 200 2500 20 3 3 3 0 0
cpu2 9999 0 0 0 0 0 0 0 0 0
intr 123 0 0
ctxt 456
"""


# --- the signal -------------------------------------------------------------------------------------
def test_busy_ticks_sum_user_nice_system_irq_softirq_steal_of_the_listed_cpus():
    # cpu0: 400 + 5 + 100 + 2 + 3 + 4 (idle 2500 and iowait 20 are not busy); cpu1: 500 + 5 + 200 + 3 + 3 + 3
    assert busy_ticks(PROC_STAT, [0]) == 514
    assert busy_ticks(PROC_STAT, [0, 1]) == 514 + 714  # the aggregate `cpu` line is never read
    assert busy_ticks(PROC_STAT, [2]) == 9999 and busy_ticks(PROC_STAT, []) == 0
    assert busy_ticks("cpu0 1 2 3 4\n", [0]) == 6  # an old kernel without irq, softirq and steal columns


def test_the_cpus_read_are_the_affinity_unless_proc_stat_numbers_them_otherwise():
    assert machine_load.listed_cpus(PROC_STAT, {1}) == [1]
    assert machine_load.listed_cpus(PROC_STAT, {0, 1, 2}) == [0, 1, 2]
    # a container's virtualized /proc/stat lists cpu0..cpu2 while the process runs on host CPUs 12 and 13
    assert machine_load.listed_cpus(PROC_STAT, {12, 13}) == [0, 1, 2]


def test_own_ticks_are_utime_plus_stime_even_with_spaces_and_parentheses_in_the_name():
    rest = "R 1 2 3 4 5 6 7 8 9 10 {utime} {stime} 0 0 20 0 3 0 100".format(utime=1234, stime=56)
    assert own_ticks(f"4242 (python) {rest}") == 1290
    assert own_ticks(f"4242 (my (odd) name) {rest}") == 1290


def test_other_load_closed_form():
    # 2 s on 2 CPUs at 100 ticks/s: the CPUs were busy for 300 ticks, 160 of them this process's own;
    # others used 140 ticks = 1.4 CPU-s of the 4 offered: 35%.
    a, b = CpuSample(at=10.0, busy=1000, own=300), CpuSample(at=12.0, busy=1300, own=460)
    others, capacity = other_cpu_seconds(a, b, cpus=2, hz=100)
    assert (others, capacity) == pytest.approx((1.4, 4.0))
    assert other_load(others, capacity) == pytest.approx(0.35)
    # a quiet interval may read a tick below this process's own (whole-tick counters): never negative
    assert other_cpu_seconds(a, CpuSample(12.0, 1159, 460), 2, 100)[0] == 0.0
    assert other_load(1.0, 0.0) is None and other_load(5.0, 4.0) == 1.0


def test_reliability_threshold_window_and_unknown():
    window = max(MIN_LOAD_WINDOW_S, 10.0)
    assert timing_reliability(window * (LOADED_SHARE - 0.001), window) == (False, None)
    unreliable, reason = timing_reliability(window * LOADED_SHARE, window)
    assert unreliable is True and f"{100 * LOADED_SHARE:.0f}% of the CPUs" in reason
    unreliable, reason = timing_reliability(0.6 * window, window)
    assert unreliable is True and reason.startswith("other processes used 60% of the CPUs during its training steps")
    short, why = timing_reliability(0.0, MIN_LOAD_WINDOW_S / 2)  # too few ticks to measure: unknown, not reliable
    assert short is None and "too short" in why
    assert timing_reliability(0.0, window, measurable=False)[0] is None


def test_load_meter_sees_a_competing_process_and_not_its_own_sleep():
    meter = LoadMeter()
    if not meter.measurable:
        pytest.skip("no /proc here")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # the child is up
        meter.start()
        time.sleep(1.0)
        others, capacity = meter.stop()
    finally:
        spinner.kill()
        spinner.wait()
    assert capacity == pytest.approx(len(meter.cpus) * 1.0, rel=0.2)
    assert others >= 0.3  # the spinning child alone had at least a fair share of a CPU for the second


def test_load_meter_without_proc_is_unknown(monkeypatch, tmp_path):
    monkeypatch.setattr(machine_load, "_PROC_STAT", tmp_path / "absent")
    meter = LoadMeter()
    meter.start()
    assert not meter.measurable and meter.stop() == (0.0, 0.0)


# --- the report leaves unreliable timings out -------------------------------------------------------
EPOCHS = 2
# (method, seed): (median step s, unreliable flag (None: stored before schema 8), other load)
COSTS = {
    ("ew", 0): (0.100, 0, 0.01),
    ("ew", 1): (0.110, 0, 0.02),
    ("deepchest", 0): (0.105, 0, 0.01),
    ("deepchest", 1): (2.300, 1, 0.64),  # the loaded one: 21× EW
    ("pcgrad", 0): (9.000, 1, 0.55),
    ("pcgrad", 1): (8.000, 1, 0.61),
    ("dwa", 0): (0.100, None, None),
    ("dwa", 1): (0.120, None, None),
}


def _database(path, costs=COSTS) -> list[int]:
    rng = np.random.default_rng(0)
    n, tasks = 60, list(TASK_NAMES)
    labels = (rng.random((n, len(tasks))) < 0.45).astype(np.uint8)
    ids = [f"{i:08d}_000.png" for i in range(n)]
    base = cpu_smoke_config()
    run_ids = []
    with ResultsStore(path) as s:
        for (method, seed), (step_s, flag, load) in costs.items():
            config = replace(base, method=method, seed=seed)
            rid = s.claim_run(
                RunKey(method, config.dataset, seed, config.config_hash()), config.to_json(), {}, "sum-to-T", Owner()
            ).run_id
            probs = np.clip(labels * 0.3 + rng.random(labels.shape) * 0.7, 0, 1).astype(np.float32)
            m = TaskMetrics(*(rng.random(len(tasks)) for _ in range(4)))
            s.add_metrics(rid, "val", 0, tasks, m)
            s.add_metrics(rid, "test", 0, tasks, m)
            for split in ("val", "test"):
                s.add_predictions(rid, split, 0, ids, labels, probs, [str(i) for i in range(n)])
            steps = 10 * EPOCHS
            costs_row = dict(
                device="cpu",
                wall_s=steps * step_s + 1,
                train_s=steps * step_s,
                eval_s=1.0,
                median_step_s=step_s,
                median_method_s=0.0,
                images_per_s=16 / step_s,
                peak_rss_mb=1000.0 + seed,
                rss_scope="run",
            )
            if flag is not None:  # a run of schema 8 (else: as a migrated run, the new columns NULL)
                costs_row.update(
                    median_step_cpu_s=2 * step_s,
                    other_load=load,
                    unreliable=flag,
                    unreliable_reason="other processes used …" if flag else None,
                )
            s.set_costs(rid, costs_row)
            s.finish_run(rid, "complete", selected_epoch=0)
            run_ids.append(rid)
    return run_ids


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    path = tmp_path_factory.mktemp("load") / "r.sqlite"
    _database(path)
    (protocol,) = load_protocols(path)
    return leaderboard(protocol, resamples=50)


def test_per_run_timing_states(board):
    runs = board.per_run.set_index(["variant", "seed"])
    assert runs.loc[("deepchest", 1), "timing"] == "unreliable" and runs.loc[("deepchest", 0), "timing"] == "reliable"
    assert runs.loc[("dwa", 0), "timing"] == "unknown" and "before schema 8" in runs.loc[("dwa", 0), "timing_reason"]
    assert runs.loc[("ew", 0), "step_cpu_s"] == pytest.approx(0.2) and np.isnan(runs.loc[("dwa", 0), "step_cpu_s"])
    assert set(timed_runs(board.per_run)["run_id"]) == set(board.per_run["run_id"]) - set(
        board.per_run[board.per_run["timing"] == "unreliable"]["run_id"]
    )


def test_time_metrics_leave_out_unreliable_runs_and_memory_keeps_them(board):
    values = board.values()
    assert values.loc["deepchest", "s_per_epoch"] == pytest.approx(10 * 0.105)  # seed 1 (loaded) left out
    assert values.loc["deepchest", "images_per_s"] == pytest.approx(16 / 0.105)
    assert values.loc["deepchest", "step_ratio"] == pytest.approx(0.105 / 0.100)  # the one reliable pair, seed 0
    assert np.isnan(values.loc["pcgrad", "s_per_epoch"]) and np.isnan(values.loc["pcgrad", "step_ratio"])
    assert values.loc["pcgrad", "peak_rss_mb"] == 1001.0  # memory is not a timing: every run counts
    assert values.loc["pcgrad", "timing_excluded"] == 2 and values.loc["deepchest", "timing_excluded"] == 1
    assert np.isnan(values.loc["ew", "timing_excluded"])
    # a run without a load measurement (migrated) is compared as before, and counted
    assert values.loc["dwa", "step_ratio"] == pytest.approx(np.sqrt(0.100 / 0.100 * 0.120 / 0.110))
    assert values.loc["dwa", "timing_unknown"] == 2


def test_the_table_marks_cells_and_says_why(board):
    table = display_table(board).set_index("method")
    assert (
        table.loc["pcgrad", "s/epoch"] == f"— {TIMING_MARK}" and table.loc["pcgrad", "step × EW"] == f"— {TIMING_MARK}"
    )
    assert table.loc["deepchest", "s/epoch"] == f"1.05 {TIMING_MARK}"
    assert table.loc["deepchest", "step × EW"].endswith(TIMING_MARK)
    assert TIMING_MARK not in table.loc["ew", "s/epoch"] + table.loc["dwa", "s/epoch"]
    notes = " ".join(table_notes(board))
    assert (
        f"{TIMING_MARK} Time columns leave out 3 of 8 run(s), timed on a loaded machine: other processes used "
        f"55–64% of the CPUs"
    ) in notes
    assert "deepchest seed 1, pcgrad seed 0, pcgrad seed 1" in notes
    assert "2 run(s) carry no measurement of the machine's load" in notes


def test_the_claims_never_use_unreliable_timings(board):
    _, time_claim, memory = check_claims(board)
    assert "DeepChest takes 1.05 s per epoch" in time_claim  # seed 0 only; with seed 1 it would be 12.02
    assert "pcgrad not measurable: 2 run(s) timed on a loaded machine" in time_claim
    assert "3 run(s) timed on a loaded machine are left out" in time_claim
    assert "90" not in time_claim and "80" not in time_claim  # pcgrad's s/epoch (90, 80): never shown or divided
    assert "pcgrad 1.00×" in memory  # peak RSS 1001 over DeepChest's 1001


def test_claims_without_a_reliable_deepchest_timing_say_not_measurable(tmp_path):
    costs = {k: (v if k[0] != "deepchest" else (v[0], 1, 0.7)) for k, v in COSTS.items()}
    _database(tmp_path / "r.sqlite", costs)
    (protocol,) = load_protocols(tmp_path / "r.sqlite")
    time_claim = check_claims(leaderboard(protocol, resamples=20))[1]
    assert time_claim.endswith("not measurable: 2 DeepChest run(s) timed on a loaded machine.")


def test_the_run_summary_leaves_out_unreliable_timings(tmp_path):
    from mtlbench.sweep_table import summary_table
    from mtlbench.training import RunResult

    ids = _database(tmp_path / "r.sqlite")
    outcomes = [RunResult(rid, method, seed, "complete") for rid, (method, seed) in zip(ids, COSTS)]
    console = Console(width=250, record=True)
    console.print(summary_table(tmp_path / "r.sqlite", outcomes))
    text = console.export_text()
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 3}
    assert "9000 ms" not in lines["pcgrad"] and f"— {TIMING_MARK}" in lines["pcgrad"]
    assert f"105 ms {TIMING_MARK}" in lines["deepchest"]  # seed 0 alone; with the loaded seed 1 it would be 1202
    assert TIMING_MARK not in lines["ew"] and "105 ± 7 ms" in lines["ew"]
    assert "Time columns leave out 3 of 8 run(s)" in " ".join(text.split())
    assert sum(f"{TIMING_MARK} Time columns" in line for line in text.splitlines()) == 1  # said once, not twice


def test_a_report_whose_every_timing_is_unreliable_renders_and_says_so(tmp_path):
    from mtlbench.report.render import write_report

    _database(tmp_path / "r.sqlite", {k: (v[0], 1, 0.8) for k, v in COSTS.items()})
    write_report(tmp_path / "r.sqlite", tmp_path / "out", resamples=100)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "not measurable: 2 DeepChest run(s) timed on a loaded machine." in md
    assert "Time columns leave out 8 of 8 run(s), timed on a loaded machine: other processes used 80%" in md
    frame = pd.read_csv(next((tmp_path / "out" / "tables").glob("leaderboard_*.csv")))
    assert not frame["metric"].isin(["s_per_epoch", "images_per_s", "step_ratio"]).any()
    assert (frame[frame["metric"] == "timing_excluded"]["value"] == 2).all()
