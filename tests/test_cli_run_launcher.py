"""`mtlbench run --launcher slurm|submitit-local`: a sweep as a job array through submitit, and `status` of it.

SLURM itself is not here: the sbatch script submitit would submit is rendered through a stand-in `sbatch` on
PATH (which keeps the script and answers like SLURM) and its directives checked; `status` asks a stand-in
`sacct`. The whole path runs for real through submitit's local executor (slow tests): three array tasks, one
of them preempted (SIGUSR2, as SLURM signals before a time limit) mid-run, requeued by submitit and resumed;
then merge and report equal a single-process sweep of the same cells exactly."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest

from mtlbench.cli import main
from mtlbench.cluster import parse_slurm_time, slurm_settings
from mtlbench.errors import UserError
from mtlbench.results.leases import Owner
from mtlbench.results.readers import computed_results
from mtlbench.results.readers import rows_read_only as rows
from mtlbench.results.store import ResultsStore
from mtlbench.shard_job import read_attempts, shard_database
from tests.sweeps import cli_command, run_cli, smoke_sweep

SBATCH = """#!/bin/sh
cp "$1" "{capture}"
echo "Submitted batch job 4242"
"""
SACCT = """#!/bin/sh
printf 'JobID|State|NodeList\\n4242_0|RUNNING|gpu07\\n4242_1|PENDING|None assigned\\n'
"""


def _tool(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """`sbatch` and `sacct` stand-ins first on PATH; returns where sbatch copies the script it is given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    capture = tmp_path / "submitted.sh"
    _tool(bin_dir, "sbatch", SBATCH.format(capture=capture))
    _tool(bin_dir, "sacct", SACCT)
    _tool(bin_dir, "srun", "#!/bin/sh\nexit 0\n")  # submitit looks for it before it submits
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return capture


def test_the_sbatch_script_asks_for_what_the_flags_say(tmp_path, fake_slurm, capsys) -> None:
    results = tmp_path / "sweep" / "nih.sqlite"
    code = main(
        smoke_sweep("ew,uncertainty", results, tmp_path / "data")
        + ["--launcher", "slurm", "--slurm-partition", "gpu", "--slurm-time", "2:30:00", "--slurm-gpus-per-job", "1"]
        + ["--slurm-array-parallelism", "1", "--slurm-account", "lab", "--slurm-cpus-per-job", "8"]
        + ["--slurm-mem", "64G", "--slurm-extra", "qos=high", "--slurm-extra", "constraint=a100"]
        + ["--slurm-setup", "module load cuda/12.4"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    script = fake_slurm.read_text()
    folder = tmp_path / "sweep" / "nih.shards"
    for directive in (
        "--partition=gpu",
        "--time=150",
        "--gpus-per-node=1",
        "--array=0-1%1",
        "--account=lab",
        "--cpus-per-task=8",
        "--mem=64G",
        "--qos=high",
        "--constraint=a100",
        "--requeue",
        "--signal=USR2@90",  # submitit's warning before the time limit: checkpoint, then requeue
        "--open-mode=append",
        f"--output={folder / 'logs'}/%A_%a_0_log.out",
        "--job-name=mtlbench-nih",
    ):
        assert f"#SBATCH {directive}\n" in script, directive
    assert "module load cuda/12.4" in script and "-m submitit.core._submit" in script
    assert "submitted job array 4242 (2 task(s) of 2 cell(s) on partition gpu" in out
    assert f"mtlbench status --results {folder}" in out and f"mtlbench merge {results} {folder}" in out
    manifest = json.loads((folder / "launch.json").read_text())
    assert manifest["array_job_id"] == "4242" and manifest["job_ids"] == ["4242_0", "4242_1"]
    assert [(c["shard"], c["method"]) for c in manifest["cells"]] == [(1, "ew"), (2, "uncertainty")]
    assert not (tmp_path / "data").exists()  # nothing ran here: the jobs load the data on their nodes

    assert main(["status", "--results", str(folder)]) == 0
    status = capsys.readouterr().out
    assert "job array 4242, 2 task(s)" in status
    assert "scheduler: 1 pending, 1 running" in status  # from sacct, through submitit
    assert "tasks started: 0 of 2" in status
    pending = [line for line in status.splitlines() if line.startswith("│ ew") or line.startswith("│ uncertainty")]
    assert len(pending) == 2 and all(line.rstrip("│ ").endswith("1") for line in pending)

    again = main(smoke_sweep("ew,uncertainty", results, tmp_path / "data") + ["--launcher", "slurm"])
    err = capsys.readouterr().err
    assert again == 2 and "the earlier submission is still at work (job 4242_0 (running)" in err, err
    assert "scancel 4242" in err


def test_settings_come_from_the_config_file_and_flags_win(tmp_path, fake_slurm, capsys) -> None:
    config = tmp_path / "cluster.json"
    config.write_text(json.dumps({"epochs": 2, "slurm": {"partition": "a100", "time": "45", "account": "old"}}))
    code = main(
        smoke_sweep("ew", tmp_path / "r.sqlite", tmp_path / "data")
        + ["--config", str(config), "--launcher", "slurm", "--slurm-account", "new"]
    )
    assert code == 0, capsys.readouterr()
    script = fake_slurm.read_text()
    assert "#SBATCH --partition=a100\n" in script and "#SBATCH --time=45\n" in script
    assert "#SBATCH --account=new\n" in script and "--account=old" not in script


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--slurm-partition", "gpu"], "--slurm-partition is a setting of the submitted jobs: add --launcher slurm"),
        (["--jobs", "2"], "--jobs is a setting"),
        (["--launcher", "slurm", "--shard", "1/2"], "--launcher with --shard"),
        (["--launcher", "slurm", "--workers", "2"], "--launcher with --workers"),
        (["--launcher", "slurm", "--jobs", "3"], "--jobs 3: the sweep has 1 cell(s)"),
        (["--launcher", "slurm", "--slurm-time", "soon"], "--slurm-time 'soon'"),
        (["--launcher", "slurm", "--slurm-extra", "=x"], "--slurm-extra '=x'"),
        (["--launcher", "slurm", "--slurm-max-attempts", "0"], "--slurm-max-attempts must be"),
        (["--launcher", "slurm", "--slurm-gpus-per-job", "2"], "0 (CPU nodes) or 1"),
        (["--launcher", "slurm", "--param", "deepchest.init=stl", "--methods", "deepchest"], "add --stl"),
    ],
)
def test_launcher_mistakes_are_one_line(tmp_path, fake_slurm, capsys, flags, says) -> None:
    code = main(smoke_sweep("ew", tmp_path / "r.sqlite", tmp_path / "data") + flags)
    err = capsys.readouterr().err
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert not fake_slurm.exists() and not (tmp_path / "r.shards" / "launch.json").exists()


def test_a_refused_submission_is_one_line_and_records_nothing(tmp_path, monkeypatch, capsys) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _tool(bin_dir, "sbatch", "#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n")
    _tool(bin_dir, "srun", "#!/bin/sh\nexit 0\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    code = main(smoke_sweep("ew", tmp_path / "r.sqlite", tmp_path / "data") + ["--launcher", "slurm"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mtlbench: error: submission failed") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.shards" / "launch.json").exists()


def test_without_slurm_commands_the_launcher_says_where_to_run(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
    code = main(smoke_sweep("ew", tmp_path / "r.sqlite", tmp_path / "data") + ["--launcher", "slurm"])
    err = capsys.readouterr().err
    assert code == 2 and "login node" in err and len(err.strip().splitlines()) == 1, err


def test_init_stl_cannot_be_split_over_task_databases(tmp_path, fake_slurm, capsys) -> None:
    code = main(
        smoke_sweep("deepchest", tmp_path / "r.sqlite", tmp_path / "data")
        + ["--stl", "--param", "deepchest.init=stl", "--launcher", "slurm", "--jobs", "2"]
    )
    assert code == 2 and "init=stl" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "minutes"), [("240", 240), ("90:30", 91), ("4:00:00", 240), ("1-0", 1440), ("2-12:30", 3630)]
)
def test_slurm_time_formats(text, minutes) -> None:
    assert parse_slurm_time(text) == minutes


def test_config_file_extras_may_be_an_object_and_setup_a_line() -> None:
    settings = slurm_settings({"extra": {"exclusive": True, "qos": "high"}, "setup": "module load cuda"}, {})
    assert settings.extra == (("exclusive", True), ("qos", "high")) and settings.setup == ("module load cuda",)


def test_unknown_config_keys_are_named() -> None:
    with pytest.raises(UserError, match="unknown key.*partiton"):
        slurm_settings({"partiton": "gpu"}, {})


def test_a_task_takes_over_runs_its_killed_attempt_left_running(tmp_path) -> None:
    """Only the task writes its share's database: a run still 'running' there when an attempt starts is a killed
    attempt's (maybe on another node, its heartbeat still fresh), and resumes at once."""
    from mtlbench.results.store import RunKey

    with ResultsStore(tmp_path / "shard.sqlite") as store:
        claim = store.claim_run(RunKey("ew", "cxr14-synth", 0, "abc"), "{}", {}, "sum", Owner(host="node-9", pid=1))
        assert claim.action == "run"
        assert store.interrupt_running("its job was stopped") == 1
        assert store.claim_run(RunKey("ew", "cxr14-synth", 0, "abc"), "{}", {}, "sum", Owner()).action == "run"


SWEEP = "ew,uncertainty,dwa"


def _single_thread_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.mark.slow
def test_an_array_with_a_preempted_task_merges_to_the_single_process_numbers(tmp_path) -> None:
    data = tmp_path / "data"
    reference = tmp_path / "reference.sqlite"
    args = smoke_sweep(SWEEP, reference, data, epochs=3)
    done = subprocess.run(cli_command(args), capture_output=True, text=True, timeout=600, env=_single_thread_env())
    assert done.returncode == 0, done.stdout + done.stderr

    results = tmp_path / "array.sqlite"
    folder = tmp_path / "array.shards"
    launch = smoke_sweep(SWEEP, results, data, epochs=3) + ["--launcher", "submitit-local", "--jobs", "3"]
    proc = subprocess.Popen(cli_command(launch), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    preempted = None
    deadline = time.monotonic() + 300
    while preempted is None and time.monotonic() < deadline and proc.poll() is None:
        for k in (1, 2, 3):
            db = shard_database(folder, k, 3)
            checkpoints = db.parent / f"{db.stem}.checkpoints"
            if db.exists() and checkpoints.exists() and any(checkpoints.glob("*.pt")):
                try:
                    running = rows(db, "SELECT owner_pid FROM runs WHERE status='running'")
                except sqlite3.OperationalError:  # its tables not yet made
                    running = []
                if running:
                    os.kill(running[0][0], signal.SIGUSR2)  # SLURM's warning before a time limit, as submitit asks
                    preempted = k
                    break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=600)
    assert preempted is not None, "no task was caught mid-run"
    assert proc.returncode == 0, out + err
    starts = [r for r in read_attempts(folder, preempted) if "started" in r]
    assert len(starts) == 2 and any("requeued" in r for r in read_attempts(folder, preempted))
    (resumes,) = rows(shard_database(folder, preempted, 3), "SELECT resumes FROM runs")[0]
    assert resumes == 1  # the second attempt went on from the checkpoint

    merged = tmp_path / "merged.sqlite"
    assert run_cli(["merge", str(merged), str(folder)]).returncode == 0
    assert computed_results(merged) == computed_results(reference)  # every number, exactly
    status = run_cli(["status", "--results", str(folder)])
    assert "tasks started: 3 of 3; requeued (attempts): " in status.stdout, status.stdout
