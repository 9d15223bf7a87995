"""mtlbench.atomic: a file is replaced whole or not at all, and no temporary file is left behind."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from mtlbench import atomic


def test_write_bytes_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text("old")
    atomic.write_bytes(path, b'{"state": "complete"}')
    assert path.read_bytes() == b'{"state": "complete"}'
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_write_with_writes_what_the_writer_writes_under_the_temporary_name(tmp_path: Path) -> None:
    path, array = tmp_path / "status.npy", np.arange(5, dtype=np.int8)
    seen: list[str] = []

    def save(tmp: Path) -> None:
        seen.append(tmp.name)
        np.save(tmp, array)  # np.save adds ".npy" unless the name ends with it

    atomic.write_with(path, save, suffix=".npy")
    expected = io.BytesIO()
    np.save(expected, array)
    assert path.read_bytes() == expected.getvalue()
    assert seen == [f".status.npy.tmp-{os.getpid()}.npy"] == [atomic.temp_path(path, ".npy").name]
    assert [p.name for p in tmp_path.iterdir()] == ["status.npy"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path: Path) -> None:
    path = tmp_path / "errors.json"
    path.write_text("{}")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b'{"a.png": ')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic.write_with(path, half_then_fail)
    assert path.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["errors.json"]
