"""Atomic file writes: a reader sees a file's old content or its new content, never part of it.

The new content goes to a temporary file in the same folder, `.<name>.tmp-<pid><suffix>` (same
folder, so the rename cannot cross file systems), which is flushed and fsynced, then renamed over
the target with os.replace, and the folder is fsynced. If the write fails the temporary file is removed; a process killed
mid-write leaves it behind under that name, for its owner to recognise and delete.

Imports nothing from mtlbench.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def temp_path(path: Path, suffix: str = "") -> Path:
    """Where the new content of `path` is written before it replaces `path`."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")


def write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, atomically."""
    write_with(path, lambda tmp: tmp.write_bytes(data))


def write_with(path: Path, write: Callable[[Path], object], suffix: str = "") -> None:
    """Replace `path` with what `write(tmp)` writes to the path it is given, atomically.

    `suffix` ends the temporary name, for writers that add an extension otherwise (np.save: ".npy").
    """
    tmp = temp_path(path, suffix)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk, where the file system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename is still atomic
    finally:
        os.close(fd)
