"""Who is running a cell: the owner of a claim, whether it is alive, and its heartbeat.

Several `mtlbench run` processes may share one results database (one per GPU, or a rerun while
an old process is still alive). A cell is claimed in the database before it runs; the claim
names the process (host and pid) and carries a heartbeat that a background thread refreshes.
Another process treats the claim as alive while the heartbeat is fresh and, on the same host,
while that pid exists; a claim of a dead process is taken over (and resumed from its checkpoint).
"""

from __future__ import annotations

import functools
import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HEARTBEAT_S = 10.0  # how often a running claim is refreshed
STALE_AFTER_S = 120.0  # a claim whose heartbeat is older than this is dead, whatever its host


def pid_exists(pid: int) -> bool:
    """True if a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: a number no pid can be
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


@dataclass(frozen=True)
class Owner:
    """This process, as recorded in a claim: host and pid (for liveness), and a random token that
    tells this process from another with the same pid (containers sharing a host name)."""

    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    stale_after_s: float = STALE_AFTER_S

    def other_is_alive(self, token: str | None, host: str | None, pid: int | None, heartbeat_at: float | None) -> bool:
        """Whether a claim (token, host, pid, heartbeat) belongs to another process that still runs it."""
        if token == self.token and pid == self.pid:
            return False  # an earlier attempt of this very process, which is no longer running it
        if heartbeat_at is None or time.time() - heartbeat_at > self.stale_after_s:
            return False
        if host == self.host and pid is not None:
            return pid_exists(pid)
        return True


@functools.lru_cache(maxsize=None)
def _owner_of(pid: int) -> Owner:
    return Owner(pid=pid)


def this_process() -> Owner:
    """The Owner of this process: the same for every claim it makes (a forked child gets its own)."""
    return _owner_of(os.getpid())


class Heartbeat:
    """A daemon thread that refreshes one run's claim every `every_s` seconds, on its own connection."""

    def __init__(self, db_path: Path, run_id: int, owner: Owner, every_s: float = HEARTBEAT_S):
        self.db_path, self.run_id, self.owner, self.every_s = db_path, run_id, owner, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"mtlbench-heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        try:
            conn = sqlite3.connect(self.db_path, timeout=self.every_s)
        except sqlite3.Error:
            return
        try:
            while not self._stop.wait(self.every_s):
                try:
                    with conn:
                        conn.execute(
                            "UPDATE runs SET heartbeat_at=? WHERE run_id=? AND owner_token=?",
                            (time.time(), self.run_id, self.owner.token),
                        )
                except sqlite3.Error:
                    pass  # a busy or full database: the next beat tries again; the trainer reports write errors
        finally:
            conn.close()
