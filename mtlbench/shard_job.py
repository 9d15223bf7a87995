"""One array task of a submitted sweep (`run --launcher slurm`): the cells of its share, into its own database.

submitit pickles a ShardJob, runs it on a node and, when SLURM signals a time limit or a preemption, calls
its `checkpoint` and requeues it: the next attempt runs the same share again, where complete cells are
skipped and the interrupted one resumes from its last epoch checkpoint (as any rerun of `mtlbench run`
does). Each attempt is recorded in the launch folder's attempts/ (host, job id, start, end, outcome); after
`max_attempts` attempts of one submission the job stops asking to be requeued and an attempt beyond the
cap does nothing, so a cell that fails every time is not retried forever.

Each share's database is written by its job alone, so a run left "running" in it at the start of an attempt
can only be a previous attempt's, killed (SIGKILL, node failure): it is marked interrupted at once instead of
waiting for its heartbeat to go stale. No torch at import: submitit unpickles this on the submitting host too.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mtlbench.plan import SweepPlan
    from mtlbench.results.store import Force

ATTEMPTS = "attempts"  # folder of the launch folder: one JSON-lines file per share


def shard_database(folder: Path, k: int, n: int) -> Path:
    """The database of share `k` of `n` in a launch folder, e.g. shard-003-of-120.sqlite."""
    width = max(3, len(str(n)))
    return folder / f"shard-{k:0{width}d}-of-{n:0{width}d}.sqlite"


def attempts_file(folder: Path, k: int) -> Path:
    """Where share `k`'s attempts are recorded."""
    return folder / ATTEMPTS / f"shard-{k}.jsonl"


def read_attempts(folder: Path, k: int, submission: str | None = None) -> list[dict[str, Any]]:
    """Share `k`'s attempt records (of one submission when given), oldest first; a torn last line is skipped."""
    try:
        lines = attempts_file(folder, k).read_text().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if submission is None or record.get("submission") == submission:
            records.append(record)
    return records


def _job_ids() -> dict[str, str]:
    ids = {
        "job": os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID") or "",
        "task": os.environ.get("SLURM_ARRAY_TASK_ID", ""),
        "restarts": os.environ.get("SLURM_RESTART_COUNT", ""),
    }
    return {k: v for k, v in ids.items() if v}


@dataclass(frozen=True)
class ShardJob:
    """Share `shard` = (K, N) of `plan`, run into `folder`'s shard database by one array task."""

    plan: "SweepPlan"
    folder: Path
    submission: str  # the submission's id: attempts are counted per submission
    max_attempts: int = 4
    threads: int | None = None  # CPU threads (the local executor, where jobs share this machine's cores)
    force: "Force" = False  # a time: results that ended before the submission are rerun
    tensorboard: Path | None = None

    @property
    def database(self) -> Path:
        """This share's database."""
        return shard_database(self.folder, *self.plan.shard)

    def _record(self, **fields: Any) -> None:
        path = attempts_file(self.folder, self.plan.shard[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"submission": self.submission, "at": time.time(), **fields}) + "\n"
        with open(path, "a") as f:  # one short line per write: appends of one writer do not interleave
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def attempts(self) -> int:
        """Attempts of this share started in this submission (this one included, once it has started)."""
        return sum("started" in r for r in read_attempts(self.folder, self.plan.shard[0], self.submission))

    def __call__(self) -> dict[str, Any]:
        """Run the share; returns {status: count} of its cells (submitit keeps it as the job's result)."""
        attempt = self.attempts() + 1
        if attempt > self.max_attempts:
            self._record(gave_up=f"{self.max_attempts} attempts already made", host=socket.gethostname())
            print(f"share {self.plan.shard[0]}: {self.max_attempts} attempts made; not retried (the cap)", flush=True)
            return {"gave up": 1}
        self._record(started=attempt, host=socket.gethostname(), pid=os.getpid(), **_job_ids())
        if self.threads:
            os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(self.threads)
        from mtlbench.commands.outcomes import Terminated, sigterm_as_interrupt

        try:
            with sigterm_as_interrupt():  # submitit ignores SIGTERM; a preemption's is ours: the run is stored
                counts = self._run()
        except Terminated:  # preempted (SLURM requeues it where the cluster's PreemptMode says so) or cancelled
            self._record(ended=attempt, outcome="stopped by SIGTERM (preempted or cancelled)")
            raise SystemExit(128 + 15) from None
        except BaseException as exc:
            self._record(ended=attempt, outcome=f"{type(exc).__name__}: {exc}"[:500])
            raise
        self._record(ended=attempt, outcome="done", cells=counts)
        return counts

    def _run(self) -> dict[str, int]:
        from rich.console import Console

        from mtlbench.progress import SweepDisplay
        from mtlbench.results.store import ResultsStore
        from mtlbench.sweep import run_sweep

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        if self.database.exists():
            with ResultsStore(self.database) as store:
                taken = store.interrupt_running("its job was stopped (preempted, timed out or killed); resumed")
            if taken:
                print(f"{taken} run(s) of an earlier attempt marked interrupted: they resume", flush=True)
        console = Console(file=sys.stdout, width=200)
        with SweepDisplay(console, len(self.plan.cells())) as display:
            outcomes = run_sweep(self.plan, self.database, display, force=self.force, tensorboard=self.tensorboard)
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        return counts

    def checkpoint(self) -> Any:
        """Called by submitit on a time limit or preemption: requeue this share unless the cap is reached."""
        import submitit

        if self.attempts() >= self.max_attempts:
            self._record(not_requeued=f"cap of {self.max_attempts} attempts")
            # Returning None would make submitit raise an Exception inside the training step, stored as a failed
            # run while the sweep went on; SystemExit stores the run as interrupted and ends the job.
            raise SystemExit(1)
        self._record(requeued=self.attempts())
        return submitit.helpers.DelayedSubmission(replace(self))
