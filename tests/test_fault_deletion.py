"""Fault class: nothing a user owns is ever deleted.

Every place where mtlbench removes or replaces files is driven here at a folder that also holds
a file of the user's, which must survive: `report --out` and `export --out` (replaced only when
empty or written by the same command, swapped in whole), their scratch folders left by a killed
process, the image cache, synthetic data generation and its partial folders, and checkpoints.
Refusals are one line (exit 2), as every other user error. No test here trains: reports are
rendered by a stand-in writer (the real one is exercised in test_cli_report.py), databases hold
a hand-made run, and generation is stopped before it starts or kept at 50 images.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtlbench import checkpoint
from mtlbench.results.leases import Owner
from mtlbench.cli import main
from mtlbench.datasets import image_cache
from mtlbench.datasets.base import DataRequest, no_progress
from mtlbench.datasets.cxr14_synth import loader, params, writer
from mtlbench.errors import UserError
from mtlbench.owned import marker_name, remove_stale_partials
from mtlbench.report import render
from mtlbench.results.store import ResultsStore, RunKey
from tests.test_image_cache import toy

PREFIX = "mtlbench: error: "
NEVER_A_PID = 2**22 + 1  # above the largest pid_max Linux allows: a process that is not alive
THESIS = "chapter 1\n"


def one_line(capsys, code: int, *needles: str, exit_code: int = 2, prefix: str = PREFIX) -> str:
    """Assert the command ended with `exit_code` and exactly one stderr line holding every needle."""
    err = capsys.readouterr().err
    assert code == exit_code, err
    assert err.startswith(prefix) and err.count("\n") == 1 and "Traceback" not in err, repr(err)
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


def database(path: Path, seed: int = 0) -> Path:
    """A results database holding one (running) run of ew with `seed`: enough to export."""
    with ResultsStore(path) as store:
        store.claim_run(
            RunKey("ew", "cxr14-synth", seed, f"hash{seed}"),
            json.dumps({"method": "ew", "dataset": "cxr14-synth", "seed": seed}),
            {},
            "",
            Owner(),
        )
    return path


def user_file(folder: Path, name: str = "thesis.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(THESIS)
    return folder / name


def leftovers(parent: Path) -> list[str]:
    """Scratch or replaced folders of report/export next to their --out."""
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


@pytest.fixture
def fake_render(monkeypatch) -> list[Path]:
    """`mtlbench report` with a stand-in for render.write_report (no database read, no figures)."""
    calls: list[Path] = []

    def write_report(results: Path, out: Path, *args: object) -> list[Path]:
        calls.append(out)
        (out / "tables").mkdir(parents=True, exist_ok=True)
        (out / "tables" / "leaderboard.csv").write_text("method\new\n")
        (out / "report.md").write_text(f"# report {len(calls)}\n")
        return [out / "report.md", out / "tables" / "leaderboard.csv"]

    monkeypatch.setattr(render, "write_report", write_report)
    return calls


def report(tmp_path: Path, out: Path | str, results: Path | None = None) -> int:
    results = results if results is not None else tmp_path / "r.sqlite"
    if not results.exists():
        ResultsStore(results).close()
    return main(["report", "--results", str(results), "--out", str(out), "--quiet"])


def export(results: Path, out: Path | str) -> int:
    return main(["export", "--results", str(results), "--out", str(out)])


# ----------------------------------------------------------------------------- 1. report --out


def test_report_refuses_a_folder_it_did_not_write(tmp_path: Path, capsys, fake_render) -> None:
    thesis = user_file(tmp_path / "mydocs")
    one_line(
        capsys,
        report(tmp_path, tmp_path / "mydocs"),
        "was not written by `mtlbench report`",
        "pick a new or empty folder",
    )
    assert thesis.read_text() == THESIS and sorted(os.listdir(tmp_path / "mydocs")) == ["thesis.txt"]
    assert fake_render == [] and leftovers(tmp_path) == []


@pytest.mark.parametrize("marked", [False, True], ids=["plain-folder", "earlier-report-folder"])
def test_report_never_replaces_a_folder_holding_the_results_database(
    tmp_path: Path, capsys, fake_render, marked: bool
) -> None:
    res = tmp_path / "res"
    if marked:  # a report folder the user then moved the database into
        assert report(tmp_path, res) == 0
    db = database(res / "r.sqlite")
    before = db.read_bytes()
    one_line(capsys, report(tmp_path, res, results=db), f"holds {db}, which this command reads")
    assert db.read_bytes() == before


@pytest.mark.parametrize("out", [".", "..", "file", "link"])
def test_report_out_that_is_no_folder_to_replace_is_one_line(
    tmp_path: Path, capsys, monkeypatch, fake_render, out: str
) -> None:
    work = tmp_path / "work"
    thesis = user_file(work)
    monkeypatch.chdir(work)
    if out == "link":
        (work / "link").symlink_to(work, target_is_directory=True)
    needle = {
        ".": "is the current folder",
        "..": "is the current folder",
        "file": "is an existing file",
        "link": "is a symbolic link",
    }[out]
    one_line(capsys, report(tmp_path, "thesis.txt" if out == "file" else out), needle, "pick a new or empty folder")
    assert thesis.read_text() == THESIS and leftovers(work) == [] and leftovers(tmp_path) == []


def test_report_uses_an_empty_folder_and_replaces_only_its_own(tmp_path: Path, capsys, fake_render) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert report(tmp_path, out) == 0
    marker = json.loads((out / marker_name("report")).read_text())
    assert marker["written_by"] == "mtlbench report"
    assert marker["entries"] == ["report.md", "tables", "tables/leaderboard.csv"]
    assert report(tmp_path, out) == 0 and (out / "report.md").read_text() == "# report 2\n"  # its own: replaced
    thesis = user_file(out / "tables", "notes.txt")  # the user's file inside a report folder
    capsys.readouterr()
    one_line(capsys, report(tmp_path, out), "holds 1 file(s) that `mtlbench report` did not write", "tables/notes.txt")
    assert thesis.read_text() == THESIS and (out / "report.md").read_text() == "# report 2\n"
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- 2. export --out


def test_export_that_fails_half_way_leaves_the_earlier_export_whole(tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "export"
    assert export(database(tmp_path / "a.sqlite", seed=1), out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []
    to_csv = pd.DataFrame.to_csv

    def failing_to_csv(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # the third table: weights
            raise OSError(28, "No space left on device")
        return to_csv(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", failing_to_csv)
    capsys.readouterr()
    one_line(
        capsys,
        export(database(tmp_path / "b.sqlite", seed=2), out),
        "cannot write the export to",
        "No space left on device",
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # not a mix of a and b, no weights.csv.tmp
    assert leftovers(tmp_path) == []
    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    assert export(tmp_path / "b.sqlite", out) == 0
    assert pd.read_csv(out / "runs.csv")["seed"].tolist() == [2]


def test_export_refuses_a_folder_it_did_not_write(tmp_path: Path, capsys) -> None:
    thesis = user_file(tmp_path / "mydocs")
    one_line(
        capsys, export(database(tmp_path / "r.sqlite"), tmp_path / "mydocs"), "was not written by `mtlbench export`"
    )
    assert sorted(os.listdir(tmp_path / "mydocs")) == ["thesis.txt"] and thesis.read_text() == THESIS


def test_export_into_its_own_folder_with_a_users_file_is_refused(tmp_path: Path, capsys) -> None:
    out = tmp_path / "export"
    db = database(tmp_path / "r.sqlite")
    assert export(db, out) == 0
    (out / "weights.csv").unlink()
    thesis = user_file(out / "weights.csv")  # a folder where a CSV was, holding the user's file
    capsys.readouterr()
    one_line(capsys, export(db, out), "did not write (weights.csv/thesis.txt)")
    assert thesis.read_text() == THESIS and not list(out.glob("*.tmp"))


@pytest.mark.parametrize("where", ["file", "proc", "database"])
def test_export_out_that_cannot_be_a_folder_is_one_line(tmp_path: Path, capsys, where: str) -> None:
    db = database(tmp_path / "r.sqlite")
    before = db.read_bytes()
    out = {"file": user_file(tmp_path), "proc": Path("/proc/x"), "database": db}[where]
    needle = {
        "file": "is an existing file",
        "proc": "cannot write the export to /proc/x",
        "database": "which this command reads",
    }[where]
    one_line(capsys, export(db, out), needle)
    assert db.read_bytes() == before and (tmp_path / "thesis.txt").read_text() == THESIS
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- 3. interrupted report, export, data


@pytest.mark.parametrize("command", ["report", "export"])
def test_scratch_folders_of_dead_processes_are_removed_and_nothing_else(
    tmp_path: Path, capsys, fake_render, command: str
) -> None:
    """What `kill -9` of a report or export leaves next to --out, cleaned by the next one."""

    def scratch(name: str, marked: bool = True) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "report.md").write_text("half\n")
        if marked:
            (folder / marker_name(command)).write_text("{}")
        return folder

    dead = [
        scratch(f".out.partial-{NEVER_A_PID}"),
        scratch(f".out.old-{NEVER_A_PID}"),
        scratch(f".other.partial-{NEVER_A_PID}"),
    ]
    kept = [
        scratch(f".out.partial-{os.getppid()}"),  # a live process's (pytest's parent)
        scratch(f".out.partial-{NEVER_A_PID + 1}", marked=False),  # not marked: not known to be ours
        scratch(".out.partial-mine", marked=False),
        scratch(".out.partial-mine2"),
    ]  # not a pid
    thesis = user_file(tmp_path)
    code = (
        report(tmp_path, tmp_path / "out")
        if command == "report"
        else export(database(tmp_path / "r.sqlite"), tmp_path / "out")
    )
    assert code == 0, capsys.readouterr().err
    assert not any(p.exists() for p in dead)
    assert all((p / "report.md").read_text() == "half\n" for p in kept) and thesis.read_text() == THESIS


@pytest.mark.parametrize("how, code", [("ctrl-c", 130), ("sigterm", 143)])
def test_report_interrupted_says_the_report_was_not_written(
    tmp_path: Path, capsys, monkeypatch, how: str, code: int
) -> None:
    out = tmp_path / "out"
    monkeypatch.setattr(render, "write_report", lambda results, scratch, *a: _write_one(scratch))
    assert report(tmp_path, out) == 0
    before = (out / "report.md").read_text()

    def interrupted(results: Path, scratch: Path, *args: object) -> list[Path]:
        _write_one(scratch)
        if how == "ctrl-c":
            raise KeyboardInterrupt
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # it would end pytest
            raise AssertionError("SIGTERM is not handled while the report renders")
        os.kill(os.getpid(), signal.SIGTERM)  # handled like Ctrl-C while the report renders
        raise AssertionError("SIGTERM was not delivered")

    monkeypatch.setattr(render, "write_report", interrupted)
    capsys.readouterr()
    one_line(
        capsys,
        report(tmp_path, out),
        "the report was not written",
        exit_code=code,
        prefix="mtlbench: interrupted; the report was not written",
    )
    assert (out / "report.md").read_text() == before and leftovers(tmp_path) == []


def _write_one(folder: Path) -> list[Path]:
    (folder / "report.md").write_text("# a whole report\n")
    return [folder / "report.md"]


@pytest.mark.parametrize("command", ["data", "run"])
def test_ctrl_c_during_data_generation_says_so(tmp_path: Path, capsys, monkeypatch, command: str) -> None:
    def interrupted(target: Path, *args: object) -> None:
        (target / "images").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "write_layout", interrupted)
    argv = (
        ["data", "prepare"]
        if command == "data"
        else ["run", "--methods", "ew", "--results", str(tmp_path / "r.sqlite")]
    )
    code = main([*argv, "--preset", "smoke", "--synth-images", "50", "--data-dir", str(tmp_path / "data"), "--quiet"])
    err = one_line(
        capsys,
        code,
        "the data generation was not finished",
        "rerun the same command",
        exit_code=130,
        prefix="mtlbench: interrupted; the data generation was not finished",
    )
    assert ("no run was started" in err) == (command == "run") and "stored as interrupted" not in err
    assert [p.name for p in (tmp_path / "data" / "cxr14-synth").iterdir()] == []  # no partial folder left


def test_ctrl_c_during_a_run_still_says_the_run_is_stored_as_interrupted(
    tmp_path: Path, capsys, monkeypatch, toy_bundle
) -> None:
    from mtlbench import sweep

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "load_dataset", lambda config, display: toy_bundle)
    monkeypatch.setattr(sweep, "warm_up", lambda *args: None)
    monkeypatch.setattr(sweep, "train_run", interrupted)
    code = main(["run", "--methods", "ew", "--preset", "smoke", "--results", str(tmp_path / "r.sqlite"), "--quiet"])
    one_line(
        capsys,
        code,
        "resumes from its last checkpoint",
        exit_code=130,
        prefix="mtlbench: interrupted; the current run is stored as interrupted",
    )


# ----------------------------------------------------------------------------- 4. every other place that deletes


def test_image_cache_rebuild_deletes_only_its_own_files(tmp_path: Path) -> None:
    source = toy()
    folder = image_cache.cache_folder(tmp_path, source.dataset, 16, source.fingerprint)
    folder.mkdir(parents=True)
    (folder / image_cache.MANIFEST).write_text(json.dumps({"state": "building", "key": {"format": -1}}))
    (folder / image_cache.NAMES).write_text("stale\n")
    (folder / f".{image_cache.STATUS}.tmp-{NEVER_A_PID}.npy").write_bytes(b"half")  # a killed writer's
    thesis = user_file(folder)
    cache = image_cache.ensure_cache(source, 16, tmp_path, no_progress)
    assert np.array_equal(np.asarray(cache.pixels), source.images)
    assert thesis.read_text() == THESIS
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [
            image_cache.MANIFEST,
            image_cache.NAMES,
            image_cache.IMAGES,
            image_cache.STATUS,
            image_cache.ERRORS,
            "thesis.txt",
        ]
    )
    assert image_cache.foreign_entries(tmp_path) == [f"{folder.name}/thesis.txt"]


def synth_request(data_dir: Path) -> DataRequest:
    return DataRequest(
        data_dir=data_dir,
        image_size=32,
        synth_images=params.MIN_IMAGES,
        synth_test_images=params.MIN_IMAGES,
        data_seed=0,
    )


@pytest.mark.parametrize("case", ["users-file-in-outdated-dataset", "users-folder-in-the-way"])
def test_synthetic_dataset_is_regenerated_only_when_it_holds_nothing_else(tmp_path: Path, case: str) -> None:
    root = loader.dataset_root(synth_request(tmp_path))
    (root / "images").mkdir(parents=True)
    thesis = user_file(root)
    if case == "users-file-in-outdated-dataset":  # written by an older generator: would be generated again
        current = params.generator_params(params.MIN_IMAGES, params.MIN_IMAGES, 32, 0)
        (root / writer.SYNTH_JSON).write_text(json.dumps({**current, "version": -1}))
        (root / writer.COMPLETE_MARKER).write_text("ok\n")
        message = "must be generated again, but holds 1 file(s) the generator did not write (thesis.txt)"
    else:
        message = "was not written by its generator"
    with pytest.raises(UserError, match="generate|generator") as caught:
        loader.load_cxr14_synth(synth_request(tmp_path), no_progress)
    assert message in str(caught.value) and "move" in str(caught.value)
    assert thesis.read_text() == THESIS
    assert sorted(p.name for p in root.parent.iterdir()) == [root.name]  # refused before generating


def test_synthetic_generation_removes_only_partials_of_dead_processes(tmp_path: Path) -> None:
    root = loader.dataset_root(synth_request(tmp_path))
    dead, mine = root.with_name(f"{root.name}.partial-{NEVER_A_PID}"), root.with_name(f"{root.name}.partial-mine")
    dead.mkdir(parents=True)
    (dead / writer.PARTIAL_MARKER).write_text("a killed generator's\n")
    thesis = user_file(mine)
    unmarked = user_file(root.with_name(f"{root.name}.partial-{NEVER_A_PID + 1}"))  # pid-named, but the user's
    loader.load_cxr14_synth(synth_request(tmp_path), no_progress)
    assert not dead.exists() and thesis.read_text() == THESIS and unmarked.read_text() == THESIS
    assert not (root / writer.PARTIAL_MARKER).exists()
    # the generated dataset, with its image cache, may be generated again: it holds only what mtlbench wrote
    assert writer.foreign_entries(root) == [] and (root / "mtlbench-cache").is_dir()
    writer.check_replaceable(root)


def test_synthetic_generation_never_deletes_a_folder_at_its_own_scratch_path(tmp_path: Path) -> None:
    root = loader.dataset_root(synth_request(tmp_path))
    thesis = user_file(root.with_name(f"{root.name}.partial-{os.getpid()}"))  # no generator's marker
    with pytest.raises(UserError, match="in the way of the cxr14-synth generator"):
        loader.load_cxr14_synth(synth_request(tmp_path), no_progress)
    assert thesis.read_text() == THESIS and not root.exists()


def test_remove_stale_partials_skips_links_files_and_live_pids(tmp_path: Path) -> None:
    target = user_file(tmp_path / "elsewhere")
    (tmp_path / f"x.partial-{NEVER_A_PID}").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / f"y.partial-{NEVER_A_PID}").write_text("a file")
    (tmp_path / f"z.partial-{os.getppid()}").mkdir()
    (tmp_path / f"w.partial-{NEVER_A_PID}").mkdir()
    (tmp_path / f"w.partial-{NEVER_A_PID}" / "ours").write_text("marker\n")
    unmarked = user_file(tmp_path / f"v.partial-{NEVER_A_PID}")  # a dead pid's name, but no marker: the user's
    owned = lambda folder: (folder / "ours").is_file()  # noqa: E731
    assert remove_stale_partials(tmp_path, "*.partial-*", owned) == [tmp_path / f"w.partial-{NEVER_A_PID}"]
    assert unmarked.read_text() == THESIS
    assert target.read_text() == THESIS and (tmp_path / f"y.partial-{NEVER_A_PID}").is_file()
    assert (tmp_path / f"z.partial-{os.getppid()}").is_dir()


def test_checkpoint_removal_keeps_a_users_file_and_its_folder(tmp_path: Path) -> None:
    path = checkpoint.checkpoint_path(tmp_path / "r.sqlite", "abc123")
    checkpoint.save_checkpoint(path, {"run_id": 1, "config_hash": "abc123"})
    (path.parent / f".{path.name}.{NEVER_A_PID}.tmp").write_bytes(b"half")  # a killed writer's
    thesis = user_file(path.parent)
    (path.parent / "other.pt").write_bytes(b"the user's model")
    checkpoint.remove_checkpoint(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["other.pt", "thesis.txt"]
    assert thesis.read_text() == THESIS


def test_a_folder_in_the_way_of_the_scratch_folder_is_not_deleted(tmp_path: Path, capsys, fake_render) -> None:
    in_the_way = tmp_path / f".out.partial-{os.getpid()}"  # this pid, but no marker: not known to be ours
    thesis = user_file(in_the_way)
    one_line(capsys, report(tmp_path, tmp_path / "out"), "cannot write the report to", "File exists")
    assert thesis.read_text() == THESIS and not (tmp_path / "out").exists()
