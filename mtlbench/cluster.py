"""Submitting a sweep as one job array through submitit (`run --launcher slurm`), and its launch folder.

`--results R.sqlite` puts everything of a submitted sweep in the launch folder R.shards/ beside it:

    R.shards/launch.json                       what was submitted: job id, shares, each share's cells
    R.shards/shard-001-of-120.sqlite           each array task's own database (one writer each: safe on NFS)
    R.shards/attempts/shard-1.jsonl            each share's attempts (start, host, job id, end, requeues)
    R.shards/logs/                             submitit's folder: the sbatch script, pickles, each task's log

`mtlbench status --results R.shards` reads it; `mtlbench merge R.sqlite R.shards` and `mtlbench report
--results R.shards` combine the shares. `--launcher submitit-local` runs the same jobs through submitit's
local executor (subprocesses on this machine, with its requeue) and waits for them: the cluster path, tried
without a cluster. No torch here.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from mtlbench.errors import UserError
from mtlbench.shard_job import ShardJob, shard_database

if TYPE_CHECKING:
    from mtlbench.plan import SweepPlan

LAUNCHERS = ("slurm", "submitit-local")
MANIFEST = "launch.json"
LOGS = "logs"


@dataclass(frozen=True)
class SlurmSettings:
    """What each array task asks SLURM for (flags --slurm-*, or the "slurm" object of a --config file)."""

    partition: str | None = None
    time: str = "4:00:00"  # per attempt: a cell still running then is requeued and resumes from its checkpoint
    gpus_per_job: int = 1
    cpus_per_job: int | None = None
    mem: str | None = None
    array_parallelism: int | None = None  # at most this many tasks at once (default: all)
    account: str | None = None
    max_attempts: int = 4  # of one share in one submission: the first run and its requeues
    extra: tuple[tuple[str, Any], ...] = ()  # other sbatch options: #SBATCH --KEY=VALUE (qos=high), --KEY (True)
    setup: tuple[str, ...] = ()  # shell lines the sbatch script runs first (e.g. module load cuda)

    def minutes(self) -> int:
        """The time limit in minutes."""
        return parse_slurm_time(self.time)


def parse_slurm_time(text: str) -> int:
    """SLURM's time formats as minutes: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (seconds rounded up)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not match:
        raise UserError(f"--slurm-time {text!r}: use minutes (240) or SLURM's H:MM:SS / D-HH:MM:SS (4:00:00)")
    days, a, b, c = match.groups()
    if days is not None:  # D-H[:M[:S]]
        minutes = int(days) * 1440 + int(a) * 60 + int(b or 0) + (1 if c and int(c) else 0)
    elif c is not None:  # H:M:S
        minutes = int(a) * 60 + int(b) + (1 if int(c) else 0)
    elif b is not None:  # M:S
        minutes = int(a) + (1 if int(b) else 0)
    else:
        minutes = int(a)
    if minutes < 1:
        raise UserError(f"--slurm-time {text!r} is under a minute")
    return minutes


SETTING_NAMES = {f.name for f in fields(SlurmSettings)}


def slurm_settings(from_file: dict[str, Any], given: dict[str, Any]) -> SlurmSettings:
    """Defaults ← the config file's "slurm" object ← the --slurm-* flags given (None: not given), checked."""
    unknown = sorted(set(from_file) - SETTING_NAMES)
    if unknown:
        raise UserError(
            f'the config file\'s "slurm" object has unknown key(s) {", ".join(unknown)}; known: '
            + ", ".join(sorted(SETTING_NAMES))
        )
    merged = {**from_file, **{k: v for k, v in given.items() if v not in (None, [], ())}}
    extra = merged.get("extra", ())
    if isinstance(extra, dict):
        extra = [k if v is True else f"{k}={v}" for k, v in extra.items()]
    if isinstance(extra, str):
        extra = [extra]
    pairs: list[tuple[str, Any]] = []
    for item in extra:
        key, sep, value = str(item).partition("=")
        key = key.strip().lstrip("-")
        if not key or " " in key:
            raise UserError(
                f"--slurm-extra {item!r}: give KEY=VALUE (qos=high, constraint=a100) or a bare KEY (exclusive)"
            )
        pairs.append((key, value.strip() if sep else True))
    merged["extra"] = tuple(pairs)
    setup = merged.get("setup", ())
    merged["setup"] = (setup,) if isinstance(setup, str) else tuple(setup)
    try:
        settings = SlurmSettings(**merged)
    except TypeError as exc:
        raise UserError(f"slurm settings: {exc}") from None
    settings.minutes()
    if settings.gpus_per_job not in (0, 1):
        raise UserError(
            f"--slurm-gpus-per-job {settings.gpus_per_job!r}: 0 (CPU nodes) or 1. Several GPUs in one task would "
            "mean several writers on its share's database, unsafe on a cluster's network filesystem: submit more "
            "tasks instead (--jobs, --slurm-array-parallelism)"
        )
    if not isinstance(settings.max_attempts, int) or settings.max_attempts < 1:
        raise UserError(f"--slurm-max-attempts must be a whole number ≥ 1, got {settings.max_attempts!r}")
    for name in ("cpus_per_job", "array_parallelism"):
        value = getattr(settings, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise UserError(f"--slurm-{name.replace('_', '-')} must be a whole number ≥ 1, got {value!r}")
    return settings


def launch_folder(results: Path) -> Path:
    """Where a submitted sweep into `results` keeps its shares, logs and manifest: <stem>.shards beside it."""
    return results.with_name(f"{results.stem}.shards")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """A launch folder's manifest, or None where there is none."""
    try:
        return json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(
            f"{folder / MANIFEST} cannot be read ({exc}); it was written by `mtlbench run --launcher`"
        ) from None


def cell_names(plan: "SweepPlan") -> list[dict[str, Any]]:
    """Each cell of the whole sweep as the manifest lists it: share, method, seed, tasks."""
    n = plan.shard[1]
    return [
        {"shard": i % n + 1, "method": c.method, "seed": c.seed, "tasks": c.tasks}
        for i, c in enumerate(plan.all_cells())
    ]


def absolute_paths(plan: "SweepPlan") -> "SweepPlan":
    """The plan with its data paths absolute: jobs may start in another folder (paths are not the identity)."""
    base = plan.base

    def absolute(value: str | None) -> str | None:
        return str(Path(value).expanduser().absolute()) if value else value

    return replace(
        plan,
        base=replace(
            base,
            data_dir=absolute(base.data_dir),
            cache_dir=absolute(base.cache_dir),
            test_data_dir=absolute(base.test_data_dir),
        ),
    )


@dataclass
class Submission:
    """What `submit_sweep` did: the job ids, the launch folder, the shares."""

    job_ids: list[str]
    folder: Path
    shares: int
    logs: Path
    launcher: str
    jobs: list[Any] = field(default_factory=list)  # submitit's Job objects (the local executor's are waited on)


def make_executor(launcher: str, logs: Path, settings: SlurmSettings, shares: int, name: str) -> Any:
    """A submitit executor for `launcher`, its parameters set from `settings`."""
    import submitit

    if launcher == "submitit-local":
        executor = submitit.LocalExecutor(folder=logs, max_num_timeout=settings.max_attempts)
        executor.update_parameters(timeout_min=settings.minutes(), gpus_per_node=settings.gpus_per_job)
        return executor
    try:
        executor = submitit.SlurmExecutor(folder=logs, max_num_timeout=settings.max_attempts)
    except RuntimeError:  # submitit found no srun
        raise UserError(
            "--launcher slurm needs SLURM's commands (srun, sbatch) on PATH: run it on the cluster's login node "
            "(or try the path here with --launcher submitit-local)"
        ) from None
    params: dict[str, Any] = {
        "job_name": name,
        "time": settings.minutes(),
        "gpus_per_node": settings.gpus_per_job or None,
        "ntasks_per_node": 1,
        "cpus_per_task": settings.cpus_per_job,
        "partition": settings.partition,
        "account": settings.account,
        "array_parallelism": settings.array_parallelism or shares,
        "stderr_to_stdout": True,
        "setup": list(settings.setup) or None,
    }
    # written as given (submitit would convert mem= from GB); --requeue: SLURM requeues a preempted task
    raw: dict[str, Any] = {"requeue": True, **({"mem": settings.mem} if settings.mem else {})}
    raw.update({key.replace("_", "-"): value for key, value in settings.extra})
    params["additional_parameters"] = raw
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def scheduler_states(folder: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """{job id: SLURM state} of a submitted array, asked through submitit (sacct); {} where it cannot answer."""
    if manifest.get("launcher") != "slurm" or shutil.which("sacct") is None:
        return {}
    try:
        import submitit

        logs = folder / manifest.get("logs", "logs")
        jobs = [submitit.SlurmJob(folder=logs, job_id=job_id) for job_id in manifest["job_ids"]]
        states = {job.job_id: job.state for job in jobs}
        return {} if all(s == "UNKNOWN" for s in states.values()) else states
    except Exception:  # noqa: BLE001  (no sacct here, no submitit: the databases still tell the story)
        return {}


LIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD")


def live_tasks(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """What of an earlier submission may still write the launch folder: its tasks SLURM still has queued or
    running, and shares whose database holds a run with a fresh heartbeat."""
    from mtlbench.results.leases import STALE_AFTER_S
    from mtlbench.results.readers import rows_read_only

    live = [
        f"job {job} ({state.lower()})"
        for job, state in scheduler_states(folder, manifest).items()
        if state.upper() in LIVE_STATES
    ]
    for db in sorted(folder.glob("*.sqlite")):
        try:
            beats = rows_read_only(db, "SELECT heartbeat_at FROM runs WHERE status='running'")
        except Exception:  # noqa: BLE001  (a damaged share is the run's business, not the submission's)
            continue
        if any(b is not None and time.time() - b < STALE_AFTER_S for (b,) in beats):
            live.append(f"{db.name} (a run is training)")
    return live


def submit_sweep(
    plan: "SweepPlan",
    results: Path,
    launcher: str,
    settings: SlurmSettings,
    shares: int,
    *,
    force: bool = False,
    tensorboard: Path | None = None,
    command: Sequence[str] = (),
) -> Submission:
    """Submit `plan` as `shares` array tasks (share K runs `--shard K/shares`), each into its own database in
    the launch folder; the manifest is written once the scheduler has accepted the jobs."""
    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher {launcher!r}: one of {', '.join(LAUNCHERS)}")
    folder = launch_folder(results.absolute())
    manifest = read_manifest(folder)
    if manifest is not None and manifest.get("shares") != shares:
        raise UserError(
            f"{folder} holds a sweep submitted in {manifest.get('shares')} shares; resubmit with --jobs "
            f"{manifest.get('shares')} (its shares' databases go on where they stopped), or pass another --results"
        )
    if manifest is not None:
        live = live_tasks(folder, manifest)
        if live:
            cancel = f"scancel {manifest['array_job_id']}" if manifest.get("array_job_id") else "stop them"
            raise UserError(
                f"{folder}: the earlier submission is still at work ({', '.join(live[:3])}"
                f"{', …' if len(live) > 3 else ''}); wait for it or {cancel}, then submit again"
            )
    from mtlbench.results.store import now_text

    plan = absolute_paths(replace(plan, shard=(1, shares)))
    logs = folder / LOGS
    logs.mkdir(parents=True, exist_ok=True)
    submission = uuid.uuid4().hex[:12]
    threads = None
    if launcher == "submitit-local":  # the jobs share this machine: its cores split between them
        from mtlbench.workers import allowed_cpus

        threads = max(1, len(allowed_cpus()) // shares)  # the local executor starts every task at once
    jobs_to_run = [
        ShardJob(
            replace(plan, shard=(k, shares)),
            folder,
            submission,
            max_attempts=settings.max_attempts,
            threads=threads,
            force=now_text() if force else False,  # every attempt reruns only what ended before this submission
            tensorboard=tensorboard.absolute() if tensorboard else None,
        )
        for k in range(1, shares + 1)
    ]
    executor = make_executor(launcher, logs, settings, shares, f"mtlbench-{results.stem}")
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's refusal; the error below says it
            jobs = executor.submit_array(jobs_to_run)
    except Exception as exc:  # noqa: BLE001  (sbatch's refusal, a missing sbatch: one line, nothing recorded)
        text = str(exc).strip().splitlines()
        raise UserError(f"submission failed: {text[-1] if text else type(exc).__name__}") from None
    job_ids = [j.job_id for j in jobs]
    array_id = job_ids[0].split("_")[0] if launcher == "slurm" else None
    record = {
        "version": 1,
        "launcher": launcher,
        "submission": submission,
        "submitted_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "array_job_id": array_id,
        "job_ids": job_ids,
        "shares": shares,
        "logs": LOGS,
        "results": str(results.absolute()),
        "command": shlex.join(command) if command else "",
        "settings": asdict(settings),
        "databases": [shard_database(folder, k, shares).name for k in range(1, shares + 1)],
        "cells": cell_names(replace(plan, shard=(1, shares))),
        "earlier": (
            [*manifest.get("earlier", []), {k: manifest.get(k) for k in ("submission", "submitted_at", "array_job_id")}]
            if manifest
            else []
        ),
    }
    from mtlbench.atomic import write_bytes

    write_bytes(folder / MANIFEST, (json.dumps(record, indent=1) + "\n").encode())
    return Submission(job_ids, folder, shares, logs, launcher, jobs)


def wait_for_local(submission: Submission, poll_s: float = 2.0) -> None:
    """Wait for the local executor's jobs (this machine's subprocesses); Ctrl-C or SIGTERM cancels them (each
    stores its run as interrupted) and is raised again."""
    from mtlbench.commands.outcomes import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            while not all(job.done() for job in submission.jobs):
                time.sleep(poll_s)
    except KeyboardInterrupt:
        for job in submission.jobs:
            job.cancel(check=False)
        deadline = time.monotonic() + 120
        while not all(job.done() for job in submission.jobs) and time.monotonic() < deadline:
            time.sleep(0.5)
        raise
