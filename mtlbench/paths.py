"""Checks on the paths a user names (`--results`), in one line each, before any work.

Torch-free on purpose: these run while the command line is parsed.
"""

from __future__ import annotations

import os
import stat
import contextlib
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from mtlbench.errors import UserError

NAME_MAX = 255  # bytes of one path component on Linux and macOS file systems
PATH_MAX = 4095  # bytes of a whole path on Linux (4096 with the terminating NUL)


def _check_length(path: Path, option: str) -> None:
    encoded = os.fsencode(path)
    longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
    if len(encoded) > PATH_MAX or longest > NAME_MAX:
        raise UserError(
            f"{option}: the path is too long ({len(encoded)} bytes, its longest part {longest}; the limits are "
            f"{PATH_MAX} and {NAME_MAX}); pass a shorter path"
        )


def _first_existing_ancestor(path: Path) -> Path:
    for parent in path.parents:
        if os.path.lexists(parent):
            return parent
    return Path(".")


def results_path(value: str, must_exist: bool, option: str = "--results") -> Path:
    """The results database path named by `value`, with `~` expanded, or a one-line UserError.

    Refused: a folder, anything that is not a regular file (`/dev/null`, a FIFO; SQLite would
    write a stray `-journal` beside it), a path under a file, a path too long for the file
    system, and (when `must_exist`) a path with nothing at it.
    """
    path = Path(value).expanduser()
    _check_length(path, option)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except NotADirectoryError:
        mode = None
    except OSError as exc:
        raise UserError(f"{option} {path}: {exc.strerror or exc}") from None
    if mode is not None:
        if stat.S_ISDIR(mode):
            raise UserError(f"{option} {path} is a folder; pass a file in it, e.g. {path / 'mtlbench.sqlite'}")
        if not stat.S_ISREG(mode):
            raise UserError(
                f"{option} {path} is not a regular file (a device, pipe or socket); pass a .sqlite file path"
            )
        return path
    ancestor = _first_existing_ancestor(path)
    if not ancestor.is_dir():
        raise UserError(f"{option} {path}: {ancestor} is a file, not a folder; pass a path in a folder")
    if must_exist:
        raise UserError(f"no results database at {path}; run `mtlbench run` first or pass --results")
    return path


@contextlib.contextmanager
def readable_results(values: Sequence[str]) -> Iterator[tuple[Path, list[Path]]]:
    """(the database to read, the paths given) for `--results A [B …]`: one file as it is; several files or a
    folder of *.sqlite merged into a temporary database first (mtlbench.results.merge), removed afterwards."""
    if len(values) == 1 and not _is_folder(values[0]):
        path = results_path(values[0], must_exist=True)
        yield path, [path]
        return
    from mtlbench.results.merge import database_files, merge_databases

    inputs = database_files([Path(v).expanduser() for v in values])
    for path in inputs:
        results_path(str(path), must_exist=True)
    with tempfile.TemporaryDirectory(prefix="mtlbench-merged-") as folder:
        merged = Path(folder) / "merged.sqlite"
        merge_databases(merged, inputs)
        yield merged, inputs


def _is_folder(value: str) -> bool:
    """Whether `value` names an existing folder (False for a path the system cannot even look up)."""
    try:
        return Path(value).expanduser().is_dir()
    except OSError:
        return False
