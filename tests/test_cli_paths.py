"""Fault class: a `--results` path that cannot be a results database, for run, report and export.

Each is one line, exit 2, before any work, naming the actual problem (not SQLite's `unable to
open database file`, `File exists` or an OSError traceback), and nothing is written anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mtlbench.cli import main
from mtlbench.paths import results_path
from mtlbench.results.store import ResultsStore

COMMANDS = {
    "run": ["run", "--quiet", "--preset", "smoke", "--methods", "ew", "--epochs", "1"],
    "report": ["report", "--quiet"],
    "export": ["export"],
}


def bad_paths(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """{case: (the --results value, what the one line must say)}."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("not a folder")
    return {
        "a folder": (str(tmp_path / "folder"), "is a folder; pass a file in it"),
        "a device": ("/dev/null", "is not a regular file"),
        "under a file": (str(tmp_path / "afile" / "r.sqlite"), "afile is a file, not a folder"),
        "too long": (str(tmp_path / ("x" * 5000) / "r.sqlite"), "the path is too long"),
        "a name too long": (str(tmp_path / ("y" * 300 + ".sqlite")), "the path is too long"),
    }


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", ["a folder", "a device", "under a file", "too long", "a name too long"])
def test_bad_results_paths_are_one_line_and_write_nothing(command, case, tmp_path, capsys) -> None:
    value, message = bad_paths(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    journal_before = os.path.exists("/dev/null-journal")  # another process may have left one
    code = main(
        [*COMMANDS[command], "--results", value, "--out", str(tmp_path / "out")]
        if command != "run"
        else [*COMMANDS[command], "--results", value, "--data-dir", str(tmp_path / "d")]
    )
    err = capsys.readouterr().err
    if case == "a folder" and command != "run":  # report and export read a folder of shard databases
        message = "is a folder with no *.sqlite results database in it"
    assert code == 2, err
    assert err.startswith("mtlbench: error: ") and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no data, no database, no output folder
    assert os.path.exists("/dev/null-journal") == journal_before


def test_tilde_in_results_is_the_home_folder(tmp_path, monkeypatch, capsys) -> None:
    """`--results=~/x.sqlite` (no shell expansion after `=`) means $HOME/x.sqlite, not a folder named `~`."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert results_path("~/x.sqlite", must_exist=False) == tmp_path / "x.sqlite"
    with ResultsStore(tmp_path / "x.sqlite"):
        pass
    code = main(["export", "--results=~/x.sqlite", "--out", str(tmp_path / "export")])
    assert code == 0, capsys.readouterr().err
    assert not (tmp_path / "~").exists()


def test_a_missing_database_for_report_and_export_names_the_path(tmp_path, capsys) -> None:
    for command in ("report", "export"):
        code = main([*COMMANDS[command], "--results", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2 and f"no results database at {tmp_path / 'none.sqlite'}" in err, err
