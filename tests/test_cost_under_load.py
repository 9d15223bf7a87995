"""Issue 17, item 5: costs that survive a busy machine. A sweep runs once as it is, then again with a
competing CPU-bound process (one busy loop per CPU) for its first half. Every cost ratio (method ÷ EW)
either stays within TOLERANCE of the first sweep's, or the runs behind it are marked unreliable; the report's
ratios and the paper-claims section never use an unreliable timing.

The first sweep is "quiet" only as far as the machine is: where other processes load it too, its runs
are marked as well, and the either/or still decides. No timing is asserted beyond that.
"""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mtlbench.machine_load import LOADED_SHARE
from tests.sweeps import report_args, smoke_sweep

pytestmark = pytest.mark.slow  # two real sweeps and a competing process: `python -m pytest -m slow`

# Methods outermost, so the competitor's half is DeepChest's two runs and EW seed 0: the claims lose
# DeepChest's timing, DeepChest ÷ EW seed 0 loses both runs, and GradNorm ÷ EW seed 1 (a gradient-based
# method, about 1.8× EW) is timed without the competitor in both sweeps.
METHODS = ("deepchest", "ew", "gradnorm")
SEEDS = (0, 1)
EPOCHS = 2
# How far an unmarked ratio may move between the two sweeps. Issue 17 asked for 15%; with no other load
# (0.01–0.02) GradNorm ÷ EW moved 23% and 21% between two sweeps in CI (1.79× vs 2.20×, 2.56× vs 2.03×, at 200
# and 400 images), so a single run's ratio on this machine is good to about ±25%, whatever the run length. A
# competitor moves the ratios far more (−75% to +236% measured here), which the marking must catch.
TOLERANCE = 0.35
MAIN = "import sys; from mtlbench.cli import main; sys.exit(main(sys.argv[1:]))"


def _sweep_argv(root: Path, db: Path) -> list[str]:
    extra = ["--seeds", ",".join(map(str, SEEDS)), "--synth-images", "200"]  # the later --synth-images wins
    return [sys.executable, "-c", MAIN, *smoke_sweep(",".join(METHODS), db, root / "data", epochs=EPOCHS, extra=extra)]


def _complete(db: Path) -> list[int]:
    try:
        with sqlite3.connect(db, timeout=30) as con:
            return [r[0] for r in con.execute("SELECT run_id FROM runs WHERE status='complete' ORDER BY run_id")]
    except sqlite3.Error:  # not created yet
        return []


def _costs(db: Path) -> pd.DataFrame:
    with sqlite3.connect(db) as con:
        return pd.read_sql(
            "SELECT r.run_id, r.method, r.seed, c.median_step_s, c.median_step_cpu_s, c.train_s, "
            "c.other_load, c.unreliable, c.unreliable_reason FROM runs r JOIN costs c USING (run_id) "
            "WHERE r.status='complete'",
            con,
        ).set_index(["method", "seed"])


def _spin(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("load")
    quiet, loaded = root / "quiet.sqlite", root / "loaded.sqlite"
    done = subprocess.run(_sweep_argv(root, quiet), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    cells = len(METHODS) * len(SEEDS)
    cpus = len(os.sched_getaffinity(0))
    competitor = _spin(cpus)  # one busy loop per CPU: others take about half of every CPU
    under_load: list[int] = []
    log = root / "loaded.log"
    try:
        with log.open("w") as sink:  # a file, not a pipe: nothing blocks the sweep while this loop polls
            sweep = subprocess.Popen(_sweep_argv(root, loaded), stdout=sink, stderr=subprocess.STDOUT)
        while sweep.poll() is None and len(_complete(loaded)) < cells // 2:
            time.sleep(0.1)
        under_load = _complete(loaded)  # these trained with the competitor running from start to end
    finally:
        for p in competitor:
            p.kill()
            p.wait()
    sweep.wait(timeout=1800)
    out = log.read_text()
    assert sweep.returncode == 0, out
    return root, quiet, loaded, under_load, out


def test_runs_timed_while_the_competitor_ran_are_marked(sweeps):
    _, _, loaded, under_load, _ = sweeps
    costs = _costs(loaded).reset_index().set_index("run_id")
    assert len(under_load) >= len(METHODS) * len(SEEDS) // 2
    for run_id in under_load:
        run = costs.loc[run_id]
        assert run["other_load"] >= LOADED_SHARE and run["unreliable"] == 1, run.to_dict()
        assert run["unreliable_reason"].startswith("other processes used")


def test_every_ratio_stays_within_the_quiet_noise_or_its_runs_are_marked(sweeps):
    _, quiet, loaded, under_load, _ = sweeps
    a, b = _costs(quiet), _costs(loaded)
    lines, compared = [], 0
    for method in (m for m in METHODS if m != "ew"):
        for seed in SEEDS:
            runs = [a.loc[(method, seed)], a.loc[("ew", seed)], b.loc[(method, seed)], b.loc[("ew", seed)]]
            ratio_a = runs[0]["median_step_s"] / runs[1]["median_step_s"]
            ratio_b = runs[2]["median_step_s"] / runs[3]["median_step_s"]
            marked = [r["unreliable"] == 1 for r in runs]
            lines.append(
                f"{method} seed {seed}: quiet {ratio_a:.2f}× (loads {runs[0]['other_load']:.2f}/"
                f"{runs[1]['other_load']:.2f}), loaded sweep {ratio_b:.2f}× (loads {runs[2]['other_load']:.2f}/"
                f"{runs[3]['other_load']:.2f}), {ratio_b / ratio_a - 1:+.0%}; marked "
                f"{'quiet ' if any(marked[:2]) else ''}{'loaded' if any(marked[2:]) else ''}"
            )
            if not any(marked):  # nothing vouches against these four timings: the ratio must hold
                compared += 1
                assert abs(ratio_b / ratio_a - 1) <= TOLERANCE, lines[-1]
    print("\n" + "\n".join(lines) + f"\n{compared} ratio(s) compared unmarked; runs under the competitor: {under_load}")


def test_the_report_ratios_and_claims_use_no_unreliable_timing(sweeps):
    from mtlbench.cli import main

    root, _, loaded, _, sweep_output = sweeps
    costs = _costs(loaded)
    out = root / "report"
    assert main(report_args(loaded, out, min_positives=5)) == 0
    (csv,) = (out / "tables").glob("leaderboard_*.csv")
    frame = pd.read_csv(csv).set_index(["variant", "metric"])
    reliable = costs[costs["unreliable"] != 1]
    for method in (m for m in METHODS if m != "ew"):  # step ratio: geometric mean over seeds where both runs count
        pairs = [s for s in SEEDS if (method, s) in reliable.index and ("ew", s) in reliable.index]
        if pairs:
            expected = math.exp(
                sum(
                    math.log(reliable.loc[(method, s), "median_step_s"] / reliable.loc[("ew", s), "median_step_s"])
                    for s in pairs
                )
                / len(pairs)
            )
            assert frame.loc[(method, "step_ratio"), "value"] == pytest.approx(expected, rel=1e-9)
        else:
            assert (method, "step_ratio") not in frame.index
        excluded = int((costs.loc[method]["unreliable"] == 1).sum())
        assert frame["value"].get((method, "timing_excluded"), 0) == excluded
    md = (out / "report.md").read_text()
    assert "DeepChest has no complete run" not in md  # the claims are checked (--min-positives 5: smoke's test split)
    (claim,) = [line for line in md.splitlines() if line.startswith("- Time per epoch")]
    dc = reliable.loc["deepchest"]["train_s"] / EPOCHS if "deepchest" in reliable.index.get_level_values(0) else None
    if dc is None:
        loaded_dc = int((costs.loc["deepchest"]["unreliable"] == 1).sum())
        assert claim.endswith(f"not measurable: {loaded_dc} DeepChest run(s) timed on a loaded machine.")
    else:
        assert f"DeepChest takes {dc.mean():.2f} s per epoch" in claim
        if "gradnorm" not in reliable.index.get_level_values(0):
            loaded_gn = int((costs.loc["gradnorm"]["unreliable"] == 1).sum())
            assert f"gradnorm not measurable: {loaded_gn} run(s) timed on a loaded machine" in claim
    if (costs["unreliable"] == 1).any():  # the table after `mtlbench run` says so too
        assert "Time columns leave out" in " ".join(sweep_output.split())
    print("\n" + claim)
