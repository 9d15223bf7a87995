"""`--tensorboard DIR`: each run's epochs as TensorBoard events, read back with TensorBoard's own reader
and checked against the results database, the source of truth."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mtlbench import checkpoint
from mtlbench.cli import main
from mtlbench.commands import options
from mtlbench.results.store import ResultsStore
from mtlbench.tasks import TASK_NAMES
from mtlbench.training import tensorboard_sink, train_run
from mtlbench.training.tensorboard_sink import TensorBoardLog
from tests.configs import cpu_smoke_config
from tests.tiny_model import tiny_model

# the tests that write or read events need the optional package (CI installs the extra)
needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="pip install -e '.[tensorboard]'"
)
TINY = (
    "--preset smoke --epochs 2 --batch-size 50 --synth-images 100 --synth-test-images 50 --image-size 16 --quiet"
).split()
METHODS = ("ew", "uncertainty")  # fixed weights, learned weights


def _reader(folder: Path) -> Any:
    """TensorBoard's own reader of the folder's event files, everything loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _steps(acc: Any, tag: str) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


def _values(acc: Any, tag: str) -> list[float]:
    return [e.value for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> tuple[int, Path, Path]:
    """Two methods, two epochs each, through the CLI with --tensorboard: (exit code, database, TB folder)."""
    root = tmp_path_factory.mktemp("tb")
    results, tb = root / "r.sqlite", root / "tb"
    argv = ["run", "--methods", ",".join(METHODS), *TINY, "--results", str(results), "--data-dir", str(root / "data")]
    return main([*argv, "--tensorboard", str(tb)]), results, tb


@needs_tensorboard
def test_each_run_has_one_folder_named_after_its_cell(tiny_sweep) -> None:
    code, results, tb = tiny_sweep
    assert code == 0
    runs = sqlite3.connect(results).execute("SELECT method, seed, config_hash FROM runs ORDER BY method").fetchall()
    expected = sorted(f"cxr14-synth/{m}-seed{s}-{h[:8]}" for m, s, h in runs)
    assert [m for m, _, _ in runs] == sorted(METHODS)
    assert sorted(p.relative_to(tb).as_posix() for p in tb.glob("*/*") if p.is_dir()) == expected


@needs_tensorboard
def test_scalars_are_one_per_epoch_and_equal_the_database(tiny_sweep) -> None:
    _, results, tb = tiny_sweep
    con = sqlite3.connect(results)
    for run_id, method, config_hash in con.execute("SELECT run_id, method, config_hash FROM runs"):
        acc = _reader(next(tb.glob(f"cxr14-synth/{method}-*-{config_hash[:8]}")))
        tags = set(acc.Tags()["scalars"])
        per_task = {f"{group}/{t}" for group in ("val_auroc", "train_loss", "weight") for t in TASK_NAMES}
        assert per_task | {"val_auroc/mean", "train_loss/total", "time/median_step_s"} == tags
        for tag in tags:
            assert _steps(acc, tag) == [0, 1], tag
        by_epoch = con.execute(
            "SELECT AVG(auroc) FROM metrics WHERE run_id=? AND split='val' GROUP BY epoch ORDER BY epoch", (run_id,)
        ).fetchall()  # SQL's AVG skips NULL (undefined) AUROCs, as the trainer's mean skips NaN
        np.testing.assert_allclose(_values(acc, "val_auroc/mean"), [m for (m,) in by_epoch], rtol=1e-6)
        for task in TASK_NAMES:
            stored = con.execute(
                "SELECT auroc FROM metrics WHERE run_id=? AND split='val' AND task=? ORDER BY epoch", (run_id, task)
            ).fetchall()
            want = np.array([np.nan if a is None else a for (a,) in stored], dtype=np.float32)
            np.testing.assert_array_equal(np.array(_values(acc, f"val_auroc/{task}"), dtype=np.float32), want)
            weights = con.execute(
                "SELECT weight FROM weights WHERE run_id=? AND step=-1 AND task=? ORDER BY epoch", (run_id, task)
            ).fetchall()
            np.testing.assert_array_equal(_values(acc, f"weight/{task}"), np.float32([w for (w,) in weights]))
        assert all(v > 0 for v in _values(acc, "time/median_step_s"))


@needs_tensorboard
def test_the_config_is_a_text_summary_at_step_0(tiny_sweep) -> None:
    _, results, tb = tiny_sweep
    con = sqlite3.connect(results)
    for method, config_hash, config_json in con.execute("SELECT method, config_hash, config_json FROM runs"):
        acc = _reader(next(tb.glob(f"cxr14-synth/{method}-*-{config_hash[:8]}")))
        [event] = acc.Tensors("config/text_summary")
        assert event.step == 0
        text = event.tensor_proto.string_val[0].decode()
        assert json.loads(text) == json.loads(config_json)  # indented as a Markdown code block: still JSON


@pytest.mark.parametrize("command", [["run"], ["tune", "--trials", "1", "--seeds", "0"]], ids=["run", "tune"])
def test_without_tensorboard_installed_the_flag_is_one_line_before_any_work(
    command, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(options, "tensorboard_installed", lambda: False)
    results, data = tmp_path / "r.sqlite", tmp_path / "data"
    argv = [*command, "--methods", "ew", *TINY, "--results", str(results), "--data-dir", str(data)]
    assert main([*argv, "--tensorboard", str(tmp_path / "tb")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mtlbench: error: --tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'"]
    assert not results.exists() and not data.exists() and not (tmp_path / "tb").exists()


def test_a_file_as_the_tensorboard_folder_is_one_line(tmp_path, capsys) -> None:
    (tmp_path / "tb").write_text("")
    argv = ["run", "--methods", "ew", *TINY, "--results", str(tmp_path / "r.sqlite"), "--data-dir", str(tmp_path)]
    assert main([*argv, "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


@needs_tensorboard
def test_a_failing_writer_warns_once_and_every_run_completes(tmp_path, toy_bundle, monkeypatch) -> None:
    def broken(folder: Path, first_epoch: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(tensorboard_sink, "open_writer", broken)
    warnings: list[str] = []
    log = TensorBoardLog(tmp_path / "tb", warnings.append)
    with ResultsStore(tmp_path / "r.sqlite") as store:
        for method in METHODS:
            cfg = cpu_smoke_config(method=method, epochs=2, batch_size=16)
            out = train_run(cfg, toy_bundle, store, {}, model_factory=tiny_model, tensorboard=log)
            assert out.status == "complete", out.detail
        assert store.query("SELECT COUNT(DISTINCT epoch) AS n FROM metrics WHERE split='val'")[0]["n"] == 2
    assert len(warnings) == 1 and "disk full" in warnings[0] and "results database" in warnings[0]


class Killed(BaseException):
    """Stands in for SIGKILL, between an epoch's rows and its checkpoint."""


@needs_tensorboard
def test_a_resumed_run_shows_each_epoch_once(tmp_path, toy_bundle, monkeypatch) -> None:
    cfg = cpu_smoke_config(method="uncertainty", epochs=3, batch_size=16)
    log = TensorBoardLog(tmp_path / "tb", pytest.fail)
    path = tmp_path / "r.sqlite"
    real_save, saves = checkpoint.save_checkpoint, []

    def killed_at_second_checkpoint(*args, **kwargs) -> None:
        saves.append(1)
        if len(saves) == 2:  # epoch 1 is stored and shown, its checkpoint never written
            raise Killed
        real_save(*args, **kwargs)

    with ResultsStore(path) as store, monkeypatch.context() as patch:
        patch.setattr(checkpoint, "save_checkpoint", killed_at_second_checkpoint)
        with pytest.raises(Killed):
            train_run(cfg, toy_bundle, store, {}, model_factory=tiny_model, tensorboard=log)
    [folder] = (tmp_path / "tb").glob("*/*")
    assert _steps(_reader(folder), "val_auroc/mean") == [0, 1]
    with ResultsStore(path) as store:
        out = train_run(cfg, toy_bundle, store, {}, model_factory=tiny_model, tensorboard=log)
        assert out.status == "complete" and store.query("SELECT resumes FROM runs")[0]["resumes"] == 1
        rows = store.query("SELECT epoch, task, auroc FROM metrics WHERE split='val'")
        stored = {(r["task"], r["epoch"]): np.nan if r["auroc"] is None else r["auroc"] for r in rows}
    acc = _reader(folder)
    assert len(list(folder.iterdir())) == 2  # one event file per attempt, in the run's one folder
    for tag in acc.Tags()["scalars"]:
        assert _steps(acc, tag) == [0, 1, 2], tag
    shown = [_values(acc, f"val_auroc/{t}") for t in TASK_NAMES]
    want = [[stored[t, epoch] for epoch in range(3)] for t in TASK_NAMES]
    np.testing.assert_array_equal(np.float32(shown), np.float32(want))
    assert len(acc.Tensors("config/text_summary")) == 1
