"""`mtlbench run --workers N` / `--devices 0,1,…`: several worker processes on one sweep.

The fast tests pin how the cores and GPUs are split and what is refused; the slow ones run a real sweep on two
workers (each cell once) and stop one with a SIGINT to the parent, as Ctrl-C in a terminal would."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import pytest

from mtlbench.cli import main
from mtlbench.errors import UserError
from mtlbench.results.readers import rows_read_only as rows
from mtlbench.results.schema import network_filesystem
from mtlbench.results.store import ResultsStore
from mtlbench.workers import WorkerSlot, plan_slots
from tests.sweeps import cli_command, run_cli, smoke_sweep

MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
fs01:/export/home /home nfs4 rw,relatime 0 0
lustre@o2ib:/scratch /scratch lustre rw 0 0
tmpfs /scratch/local tmpfs rw 0 0
/dev/sdb1 /mnt/my\\040disk ext4 rw 0 0
"""


def test_cores_are_split_into_contiguous_shares() -> None:
    slots = plan_slots(3, None, cpus=list(range(8)))
    assert [s.cpus for s in slots] == [(0, 1, 2), (3, 4, 5), (6, 7)]
    assert [s.index for s in slots] == [1, 2, 3] and all(s.gpu is None for s in slots)
    assert slots[2].describe() == "worker 3 (2 cores)"


def test_devices_get_one_gpu_each_as_this_process_numbers_them(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [(s.gpu, s.cpus) for s in plan_slots(None, "0,1", cpus=[0, 1, 2, 3])] == [("0", (0, 1)), ("1", (2, 3))]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    slots = plan_slots(None, "2,0", cpus=[0, 1])
    assert [s.gpu for s in slots] == ["6", "4"]  # the GPUs this process calls 2 and 0
    assert slots[0].describe() == "worker 1 (GPU 6, 1 core)"


@pytest.mark.parametrize(
    ("workers", "devices", "cpus", "says"),
    [
        (2, "0,1", [0, 1], "--workers and --devices both"),
        (3, None, [0, 1], "give at most --workers 2"),
        (0, None, [0, 1], "at least 1"),
        (None, "0,0", [0, 1], "distinct GPU numbers"),
        (None, "a", [0, 1], "distinct GPU numbers"),
        (None, "", [0, 1], "distinct GPU numbers"),
    ],
)
def test_impossible_splits_are_refused(workers, devices, cpus, says) -> None:
    with pytest.raises(UserError, match=says):
        plan_slots(workers, devices, cpus=cpus)


def test_a_device_beyond_the_visible_ones_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(UserError, match="sees 1 GPU"):
        plan_slots(None, "0,1", cpus=[0, 1])


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--devices", "0"], "--devices needs CUDA GPUs and this machine has none"),
        (["--workers", "999"], "give at most --workers"),
        (["--workers", "1", "--device", "cuda"], "--workers splits the CPU cores"),
    ],
)
def test_run_refuses_workers_it_cannot_start_in_one_line(tmp_path, capsys, flags, says) -> None:
    code = main(smoke_sweep("ew", tmp_path / "r.sqlite", tmp_path / "data", extra=flags))
    err = capsys.readouterr().err
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "data").exists() and not (tmp_path / "r.sqlite").exists()


def test_network_filesystems_are_recognised_from_the_mount_table() -> None:
    assert network_filesystem("/home/me/results.sqlite", MOUNTS) == "nfs4"
    assert network_filesystem("/scratch/sweep/r.sqlite", MOUNTS) == "lustre"
    assert network_filesystem("/scratch/local/r.sqlite", MOUNTS) is None  # the longest mount point decides
    assert network_filesystem("/mnt/my disk/r.sqlite", MOUNTS) is None
    assert network_filesystem("/homeless/r.sqlite", MOUNTS) is None  # a prefix of the name is not the mount


def test_a_symlink_to_a_network_mount_and_stacked_mounts_are_followed(tmp_path) -> None:
    link = tmp_path / "shared"
    link.symlink_to("/home")  # e.g. /shared → an NFS mount
    assert network_filesystem(link / "sweep" / "r.sqlite", MOUNTS) == "nfs4"
    stacked = "autofs /home autofs rw 0 0\nfs01:/export/home /home nfs4 rw 0 0\n"
    assert network_filesystem("/home/me/r.sqlite", stacked) == "nfs4"  # the later mount on one point is it


def test_force_with_a_time_reruns_only_results_that_ended_before_it(tmp_path) -> None:
    """Workers forcing one sweep rerun a cell once: a result another worker finished during the sweep is kept."""
    from mtlbench.results.leases import Owner
    from mtlbench.results.store import RunKey, now_text

    key = RunKey("ew", "cxr14-synth", 0, "abc")
    with ResultsStore(tmp_path / "r.sqlite") as store:
        first = store.claim_run(key, "{}", {}, "sum", Owner())
        store.finish_run(first.run_id, "diverged")  # a final result (a complete one would need its metrics)
        with store.transaction() as c:
            c.execute("UPDATE runs SET ended_at='2020-01-01T00:00:00+00:00'")
        sweep_began = now_text()
        again = store.claim_run(key, "{}", {}, "sum", Owner(), force=sweep_began)
        assert again.action == "run"  # ended before the sweep: rerun
        store.finish_run(again.run_id, "diverged")
        assert store.claim_run(key, "{}", {}, "sum", Owner(), force=sweep_began).action == "done"  # this sweep's
        assert store.claim_run(key, "{}", {}, "sum", Owner(), force=True).action == "run"


def test_a_database_on_a_network_filesystem_uses_the_rollback_journal(tmp_path, monkeypatch) -> None:
    """SQLite's WAL mode needs shared memory between processes, which NFS/Lustre/GPFS do not give."""
    monkeypatch.setattr("mtlbench.results.schema.network_filesystem", lambda path, mounts=None: "nfs")
    with ResultsStore(tmp_path / "shared.sqlite") as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    monkeypatch.setattr("mtlbench.results.schema.network_filesystem", lambda path, mounts=None: None)
    with ResultsStore(tmp_path / "shared.sqlite") as store:  # moved back to a local disk: WAL again
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_workers_refuse_a_database_on_a_network_filesystem(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("mtlbench.results.schema.network_filesystem", lambda path, mounts=None: "lustre")
    code = main(smoke_sweep("ew", tmp_path / "r.sqlite", tmp_path / "data", extra=["--workers", "1"]))
    err = capsys.readouterr().err
    assert code == 2 and "lustre filesystem" in err and "--shard" in err, err


def test_worker_slots_survive_pickling() -> None:
    import pickle

    slot = WorkerSlot(2, (3,), "1")
    assert pickle.loads(pickle.dumps(slot)) == slot


@pytest.mark.slow
def test_two_workers_run_each_cell_of_a_sweep_once(tmp_path) -> None:
    results = tmp_path / "r.sqlite"
    args = smoke_sweep("ew,uncertainty", results, tmp_path / "data", extra=["--seeds", "0,1", "--workers", "2"])
    done = run_cli(args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 workers: worker 1 (1 core), worker 2 (1 core)" in done.stdout
    stored = rows(results, "SELECT method, seed, status, resumes, owner_pid FROM runs ORDER BY method, seed")
    assert [(m, s, st, r) for m, s, st, r, _ in stored] == [
        (m, s, "complete", 0) for m in ("ew", "uncertainty") for s in (0, 1)
    ]
    epochs = rows(results, "SELECT run_id, COUNT(DISTINCT epoch) FROM metrics WHERE split='val' GROUP BY run_id")
    assert {n for _, n in epochs} == {2}
    owners = {pid for *_, pid in stored}
    assert 1 <= len(owners) <= 2  # the workers' processes, never the parent
    warnings = [line for line in done.stdout.splitlines() if line.startswith("warning: cxr14-synth: the train split")]
    assert len(warnings) == 1  # each worker loads the data and warns; the display says it once


def _ctrl_c_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # see test_fault_kill: a background shell ignores SIGINT


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_the_runs_resume(tmp_path) -> None:
    results = tmp_path / "r.sqlite"
    args = smoke_sweep("ew,uncertainty", results, tmp_path / "data", epochs=20, extra=["--workers", "2"])
    proc = subprocess.Popen(
        cli_command(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    deadline = time.monotonic() + 300
    running: list = []
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            running = rows(results, "SELECT owner_pid FROM runs WHERE status='running'") if results.exists() else []
        except sqlite3.OperationalError:  # the file exists, its tables not yet
            running = []
        if len(running) == 2:
            break
        time.sleep(0.05)
    assert len(running) == 2, "both workers should be training"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole group; workers ignore it, the parent stops each once
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err + out
    assert rows(results, "SELECT COUNT(*) FROM runs WHERE status='running'") == [(0,)]
    assert rows(results, "SELECT COUNT(*) FROM runs WHERE status='interrupted'") == [(2,)]
    for (pid,) in running:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    again = run_cli(args)
    assert again.returncode == 0, again.stdout + again.stderr
    stored = rows(results, "SELECT method, status, resumes FROM runs ORDER BY method")
    assert [r[:2] for r in stored] == [("ew", "complete"), ("uncertainty", "complete")]
    assert sum(r[2] for r in stored) <= 2  # the two stopped runs resumed (from a checkpoint where one existed)
