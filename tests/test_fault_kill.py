"""Fault class: the process dies or is stopped mid-sweep (SIGKILL, Ctrl-C, SIGTERM).

Real `mtlbench run` processes are stopped right after a run's first checkpoint lands, then the
same command is run again: complete runs are skipped, the stopped run continues from its
checkpoint, and every stored number equals that of a sweep that was never stopped.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from mtlbench.results.readers import computed_results
from mtlbench.results.readers import rows_read_only as rows
from tests.sweeps import cli_command, smoke_sweep

pytestmark = pytest.mark.slow  # a real sweep, several processes or a kill: `python -m pytest -m slow`

METHODS = "ew,deepchest,famo"


def command(results: Path, data: Path) -> list[str]:
    """The sweep every test here runs: three methods with state, 3 short epochs."""
    return cli_command(smoke_sweep(METHODS, results, data, epochs=3, quiet=False))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, results of the same sweep never stopped)."""
    root = tmp_path_factory.mktemp("kill")
    results = root / "reference.sqlite"
    done = subprocess.run(command(results, root / "data"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "data", results


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child: SIGINT raises KeyboardInterrupt, as for a command run in a terminal. A shell ignores SIGINT
    in the jobs it starts in the background (`.ci/run &`), and Python keeps an inherited SIG_IGN: without this
    the test would judge how its own runner was started, not how mtlbench handles Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _has_checkpoint(folder: Path) -> bool:
    """Whether `folder` holds a checkpoint now (the sweep deletes the folder when a run ends: then none)."""
    try:
        return any(folder.glob("*.pt"))
    except FileNotFoundError:  # removed while it was being listed
        return False


def stop_after_first_checkpoint(data: Path, folder: Path, sig: int) -> tuple[subprocess.CompletedProcess, Path]:
    """Start the sweep; once a run is complete and the next run's checkpoint exists, send `sig`. Returns the
    finished process and its results database.

    The window is a fraction of a second of a short run: where the watcher misses it (the sweep ends
    without a signal sent), the sweep is started again on a fresh database, up to three times. A signal
    that was sent is never retried: whatever the process did with it is what the test judges."""
    for attempt in range(3):
        results = folder / f"r{attempt}.sqlite"
        checkpoints = results.parent / f"{results.stem}.checkpoints"
        cmd = command(results, data)
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_in_a_terminal
        )
        deadline, sent = time.monotonic() + 300, False
        while time.monotonic() < deadline and proc.poll() is None:
            if _has_checkpoint(checkpoints) and results.exists():
                done, running = rows(results, "SELECT SUM(status='complete'), SUM(status='running') FROM runs")[0]
                if (done or 0) >= 1 and (running or 0) == 1:  # mid-run, not between a run's end and its cleanup
                    proc.send_signal(sig)
                    sent = True
                    break
            time.sleep(0.005)
        out, err = proc.communicate(timeout=120)
        if sent:
            return subprocess.CompletedProcess(cmd, proc.returncode, out, err), results
    pytest.fail("three sweeps ended before a run's first checkpoint could be seen mid-run")


def assert_resumes_to_the_reference(results: Path, data: Path, reference: Path) -> str:
    """Rerun the same command; the sweep completes and equals the reference exactly."""
    again = subprocess.run(command(results, data), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 run(s) were already complete" in again.stdout
    assert "resumed at epoch" in again.stdout, again.stdout
    assert rows(results, "SELECT COUNT(*), SUM(resumes) FROM runs WHERE status='complete'") == [(3, 1)]
    assert computed_results(results) == computed_results(reference)  # exact, not approximate
    assert not (results.parent / f"{results.stem}.checkpoints").exists()  # nothing left behind
    return again.stdout


def test_sigkill_mid_sweep_then_rerun_resumes_and_equals_the_uninterrupted_sweep(reference, tmp_path) -> None:
    data, ref = reference
    killed, results = stop_after_first_checkpoint(data, tmp_path, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert rows(results, "PRAGMA integrity_check") == [("ok",)]
    statuses = rows(results, "SELECT method, status FROM runs ORDER BY run_id")
    assert statuses[0] == ("ew", "complete") and statuses[-1][1] == "running"  # the dead process's claim
    assert_resumes_to_the_reference(results, data, ref)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_marks_the_run_interrupted_and_a_rerun_resumes(reference, tmp_path, sig, code) -> None:
    data, ref = reference
    stopped, results = stop_after_first_checkpoint(data, tmp_path, sig)
    assert stopped.returncode == code, stopped.stdout + stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1].startswith("mtlbench: interrupted; the current run is stored")
    assert rows(results, "PRAGMA integrity_check") == [("ok",)]
    last = rows(results, "SELECT status, error FROM runs ORDER BY run_id DESC LIMIT 1")[0]
    assert last[0] == "interrupted" and "rerun the same command" in last[1]
    assert_resumes_to_the_reference(results, data, ref)
