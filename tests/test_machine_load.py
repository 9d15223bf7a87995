"""Costs on a shared machine: the other-load signal (closed-form inputs)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from mtlbench import machine_load
from mtlbench.machine_load import (LOADED_SHARE, MIN_LOAD_WINDOW_S, CpuSample, LoadMeter, busy_ticks, other_cpu_seconds,
                                   other_load, own_ticks, timing_reliability)

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
