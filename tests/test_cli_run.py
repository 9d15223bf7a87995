"""`mtlbench run` end to end on a tiny synthetic dataset (export: tests/test_cli_export.py)."""

import json
import platform
import sqlite3

import pytest
import torch

import mtlbench
from mtlbench.cli import main
from mtlbench.environment import git_commit
from tests.sweeps import smoke_sweep


pytestmark = pytest.mark.slow  # a real sweep, several processes or a kill: `python -m pytest -m slow`

# One method of each gradient space and weight scale (CI's smoke sweep runs every method once):
# losses (ew, deepchest), shared parameters (pcgrad), shared features without weights (graddrop),
# the last shared layer (gradnorm), learned weights (uncertainty).
METHODS = ("deepchest", "ew", "graddrop", "gradnorm", "pcgrad", "uncertainty")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    extra = ["--seeds", "0,1", "--image-size", "32"]
    argv = smoke_sweep(",".join(METHODS), root / "r.sqlite", root / "data", epochs=1, extra=extra)
    return root, argv, main(argv)


def test_run_stores_a_complete_run_per_method_and_seed(sweep, capsys):
    root, _, code = sweep
    assert code == 0
    con = sqlite3.connect(root / "r.sqlite")
    rows = con.execute(
        "SELECT method, seed, status, env_json, data_json, config_json FROM runs ORDER BY method, seed"
    ).fetchall()
    assert [(m, s, st) for m, s, st, *_ in rows] == [(m, s, "complete") for m in METHODS for s in (0, 1)]
    for *_, env_json, data_json, config_json in rows:
        env, data, config = json.loads(env_json), json.loads(data_json), json.loads(config_json)
        assert (env["torch"], env["mtlbench"], env["python"]) == (
            torch.__version__,
            mtlbench.__version__,
            platform.python_version(),
        )
        assert env["git_commit"] == git_commit() and (env["device"], env["cuda"]) == ("cpu", None)
        assert data["fingerprint"] == config["data_fingerprint"] != ""  # the data the run's identity names
        generator, images = data["generator"], data["images"]
        assert (generator["generator"], generator["count"], generator["test_count"]) == (
            "cxr14-synth",
            120,
            config["synth_test_images"],
        )  # --synth-images counts train + val
        assert (images["train"] + images["val"], images["test"]) == (120, config["synth_test_images"])
        assert data["missing"] == {"train": 0, "val": 0, "test": 0}


def test_rerun_skips_complete_cells(sweep, capsys):
    root, argv, _ = sweep
    before = sqlite3.connect(root / "r.sqlite").execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert main(argv) == 0
    after = sqlite3.connect(root / "r.sqlite").execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert before == after == 2 * len(METHODS)
    assert "ew" in capsys.readouterr().out  # the summary table still lists the skipped cells
