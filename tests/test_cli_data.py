"""`mtlbench data prepare|verify`, and `mtlbench run` on nih-cxr14 and chestmnist, end to end."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from mtlbench.cli import main
from mtlbench.tasks import TASK_NAMES
from tests.dataset_fixtures import write_nih_download, write_npz


@pytest.fixture(scope="module")
def nih_root(tmp_path_factory) -> Path:
    return write_nih_download(tmp_path_factory.mktemp("nih") / "download", count=160, layout="archives").root


def data_args(root: Path, *extra: str) -> list[str]:
    return ["--dataset", "nih-cxr14", "--data-dir", str(root), "--image-size", "32", "--quiet", *extra]


def test_verify_before_prepare_says_what_to_run(tmp_path: Path, nih_root: Path, capsys) -> None:
    code = main(["data", "verify", *data_args(nih_root, "--cache-dir", str(tmp_path / "cache"))])
    err = capsys.readouterr().err
    assert code == 2 and "run `mtlbench data prepare` with the same options" in err and err.count("\n") == 1


def test_prepare_then_verify(tmp_path: Path, nih_root: Path, capsys) -> None:
    cache = tmp_path / "cache"
    assert main(["data", "prepare", *data_args(nih_root, "--cache-dir", str(cache))]) == 0
    out = capsys.readouterr().out
    assert "nih-cxr14: train" in out and f"cache: {cache}" in out
    assert main(["data", "verify", *data_args(nih_root, "--cache-dir", str(cache))]) == 0
    out = capsys.readouterr().out
    assert "label prevalence per split" in out and "OK: fingerprint" in out
    assert all(task[:10] in out for task in TASK_NAMES)


def test_verify_detects_a_damaged_cache(tmp_path: Path, nih_root: Path, capsys) -> None:
    cache = tmp_path / "cache"
    assert main(["data", "prepare", *data_args(nih_root, "--cache-dir", str(cache))]) == 0
    images = next(cache.glob("nih-cxr14-px32-*/images.npy"))
    pixels = np.load(images, mmap_mode="r+")
    pixels[:] = 255 - pixels
    pixels.flush()
    del pixels
    capsys.readouterr()
    assert main(["data", "verify", *data_args(nih_root, "--cache-dir", str(cache), "--sample", "8")]) == 1
    assert "FAILED: 8 of 8 sampled images differ" in capsys.readouterr().out


def test_run_on_nih_download_with_missing_archive(tmp_path: Path, nih_root: Path, capsys) -> None:
    import shutil

    root = tmp_path / "partial"
    shutil.copytree(nih_root, root, ignore=shutil.ignore_patterns("mtlbench-cache", "images_012"))
    results = tmp_path / "r.sqlite"
    run = ["run", "--methods", "ew,deepchest", "--preset", "smoke", "--results", str(results), *data_args(root)]
    assert main(run) == 2
    assert "listed images are missing" in capsys.readouterr().err and not results.exists()
    assert main([*run, "--allow-missing"]) == 0
    rows = sqlite3.connect(results).execute("SELECT method, status, data_json FROM runs").fetchall()
    assert sorted((m, s) for m, s, _ in rows) == [("deepchest", "complete"), ("ew", "complete")]
    info = json.loads(rows[0][2])
    absent = {p.name for p in (nih_root / "images_012" / "images").iterdir()}  # the archive left out
    test_list = set((nih_root / "test_list.txt").read_text().split())
    assert sum(info["missing"].values()) == len(absent) > 0 and info["missing"]["test"] == len(absent & test_list)
    assert info["allow_missing"] is True


def test_run_on_chestmnist(tmp_path: Path, capsys) -> None:
    write_npz(tmp_path / "medmnist", size=64, counts={"train": 96, "val": 32, "test": 32})
    results = tmp_path / "r.sqlite"
    code = main(
        [
            "run",
            "--methods",
            "ew",
            "--preset",
            "smoke",
            "--dataset",
            "chestmnist",
            "--quiet",
            "--data-dir",
            str(tmp_path / "medmnist"),
            "--results",
            str(results),
        ]
    )
    assert code == 0, capsys.readouterr().err
    status, data = sqlite3.connect(results).execute("SELECT status, data_json FROM runs").fetchone()
    assert status == "complete" and json.loads(data)["file"] == "chestmnist_64.npz"


def synth_args(data_dir: Path, *extra: str) -> list[str]:
    return ["--preset", "smoke", "--synth-images", "60", "--data-dir", str(data_dir), "--quiet", *extra]


def test_synthetic_test_size_through_prepare_and_verify(tmp_path: Path, capsys) -> None:
    assert main(["data", "prepare", *synth_args(tmp_path, "--synth-test-images", "70")]) == 0
    out = capsys.readouterr().out
    assert "cxr14-synth: train" in out and "test 70 images" in out
    assert main(["data", "verify", *synth_args(tmp_path, "--synth-test-images", "70")]) == 0
    out = capsys.readouterr().out
    assert "test (n=70)" in out and "OK: fingerprint" in out
    # another test size is another dataset: verify does not pass it off as the one prepared
    code = main(["data", "verify", *synth_args(tmp_path, "--synth-test-images", "90")])
    err = capsys.readouterr().err
    assert code == 2 and "no generated cxr14-synth" in err and "n60-test90-px32-seed0" in err
    assert "run `mtlbench data prepare` with the same options" in err and err.count("\n") == 1
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"synth_test_images": 70}))
    assert main(["data", "verify", *synth_args(tmp_path, "--config", str(config))]) == 0
    assert "test (n=70)" in capsys.readouterr().out


def test_a_test_size_beyond_its_patients_is_one_line(tmp_path: Path, capsys) -> None:
    code = main(["data", "prepare", *synth_args(tmp_path, "--synth-test-images", "40000")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--synth-test-images must be at most 22,443 with --data-seed 0, got 40,000" in err
    assert not (tmp_path / "cxr14-synth").exists()
