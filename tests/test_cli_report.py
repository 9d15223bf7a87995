"""`mtlbench report` end to end, from a database written by a real (tiny) sweep inside the test."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mtlbench.leases import Owner
from mtlbench.cli import main
from mtlbench.report.figures import FIGURES
from mtlbench.store import ResultsStore, RunKey

pytestmark = pytest.mark.slow  # a real sweep, several processes or a kill: `python -m pytest -m slow`

METHODS = ("ew", "deepchest", "pcgrad", "graddrop")  # graddrop: a method without weights


def sweep_args(root: Path, *extra: str) -> list[str]:
    return ["run", "--methods", ",".join(METHODS), "--preset", "smoke", "--seeds", "0,1", "--synth-images", "120",
            "--epochs", "2", "--batch-size", "16", "--quiet", "--results", str(root / "r.sqlite"),
            "--data-dir", str(root / "data"), *extra]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    assert main(sweep_args(root)) == 0
    out = root / "out"
    assert main(["report", "--results", str(root / "r.sqlite"), "--out", str(out), "--quiet",
                 "--resamples", "200"]) == 0
    return root, out


def _leaderboard(out: Path) -> pd.DataFrame:
    (csv,) = (out / "tables").glob("leaderboard_*.csv")
    return pd.read_csv(csv)


def test_every_file_is_written(report) -> None:
    _, out = report
    assert (out / "report.md").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES) and 'src="http' not in html
    assert len(list((out / "tables").glob("*.csv"))) == 1 and len(list((out / "tables").glob("*.tex"))) == 1
    for name in FIGURES:
        assert len(list(out.glob(f"figures/*/{name}.png"))) == 1 and len(list(out.glob(f"figures/*/{name}.svg"))) == 1
    md = (out / "report.md").read_text()
    assert "### Leaderboard" in md and "claims, checked against this data" in md and "Overall accuracy" in md


def test_leaderboard_numbers_match_the_store(report) -> None:
    root, out = report
    table = _leaderboard(out).set_index("method")
    con = sqlite3.connect(root / "r.sqlite")
    test = pd.read_sql("SELECT r.method, r.seed, m.task, m.auroc, m.accuracy, m.loss FROM metrics m "
                       "JOIN runs r USING (run_id) WHERE m.split='test' AND r.status='complete'", con)
    per_run = test.groupby(["method", "seed"])[["auroc", "accuracy", "loss"]].mean()
    for method in METHODS:
        runs = per_run.loc[method]
        auroc_text = table.loc[method, "AUROC"]
        assert auroc_text.startswith(f"{runs['auroc'].mean():.3f} ± {runs['auroc'].std(ddof=1):.3f} (n=2)")
        assert float(table.loc[method, "accuracy@0.5"]) == pytest.approx(runs["accuracy"].mean(), abs=5e-4)
        assert float(table.loc[method, "test loss"]) == pytest.approx(runs["loss"].mean(), abs=5e-5)
        assert table.loc[method, "runs"] == "2/2"
    costs = pd.read_sql("SELECT r.method, c.median_step_s FROM costs c JOIN runs r USING (run_id)", con)
    step = costs.groupby("method")["median_step_s"].mean()
    assert float(table.loc["pcgrad", "step × EW"]) == pytest.approx(step["pcgrad"] / step["ew"], abs=5e-3)
    assert table.loc["ew", "Δm% vs EW"] == 0.0 or str(table.loc["ew", "Δm% vs EW"]) in ("+0.00", "0.0")


def test_figures_are_real_images(report) -> None:
    _, out = report
    for png in out.glob("figures/*/*.png"):
        image = np.asarray(Image.open(png).convert("RGB"))
        assert image.shape[0] > 200 and image.shape[1] > 300, png
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20, f"{png} is nearly blank"


def test_failed_runs_are_listed_and_other_protocols_not_merged(report, tmp_path: Path, capsys) -> None:
    root, _ = report
    db = tmp_path / "r.sqlite"
    db.write_bytes((root / "r.sqlite").read_bytes())
    with ResultsStore(db) as store:
        config = json.loads(store.query("SELECT config_json FROM runs WHERE method='pcgrad' LIMIT 1")[0]["config_json"])
        rid = store.claim_run(RunKey("pcgrad", config["dataset"], 7, "deadbeef"), json.dumps({**config, "seed": 7}), {}, "",
                              Owner()).run_id
        store.finish_run(rid, "oom", error="CUDA out of memory at 1234 MiB")
    assert main(sweep_args(root, "--methods", "ew", "--epochs", "1", "--results", str(db))) == 0
    out = tmp_path / "out"
    assert main(["report", "--results", str(db), "--out", str(out), "--quiet", "--resamples", "100"]) == 0
    md = (out / "report.md").read_text()
    assert "2 protocol(s)" in md and md.count("### Leaderboard") == 2
    assert "pcgrad seed 7: oom (CUDA out of memory at 1234 MiB)" in md
    assert "2/3 (1 oom)" in md


def test_report_never_trains_and_its_own_old_report_is_replaced_whole(report, tmp_path: Path) -> None:
    root, first = report
    out = tmp_path / "out"
    shutil.copytree(first, out)  # an earlier report, with its marker listing what it wrote
    marker = json.loads((out / ".mtlbench-report").read_text())
    assert {"report.md", "report.html", "tables", "figures"} <= set(marker["entries"])
    (out / "stale.txt").write_text("from an older report")  # a file an older report wrote, this one does not
    (out / ".mtlbench-report").write_text(json.dumps({**marker, "entries": [*marker["entries"], "stale.txt"]}))
    before = (root / "r.sqlite").read_bytes()
    assert main(["report", "--results", str(root / "r.sqlite"), "--out", str(out), "--quiet",
                 "--methods", "ew,deepchest", "--resamples", "100"]) == 0
    assert (root / "r.sqlite").read_bytes() == before
    assert not (out / "stale.txt").exists()
    assert list(_leaderboard(out)["method"]) == ["ew", "deepchest"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no scratch or replaced folder left


def test_report_refuses_a_users_folder_and_the_folder_of_its_database(report, tmp_path: Path, capsys) -> None:
    root, _ = report
    mydocs = tmp_path / "mydocs"
    mydocs.mkdir()
    (mydocs / "thesis.txt").write_text("chapter 1")
    res = tmp_path / "res"
    res.mkdir()
    db = res / "r.sqlite"
    db.write_bytes((root / "r.sqlite").read_bytes())
    for results, out, message in ((root / "r.sqlite", mydocs, "was not written by `mtlbench report`"),
                                  (db, res, "which this command reads")):
        capsys.readouterr()
        code = main(["report", "--results", str(results), "--out", str(out), "--quiet", "--resamples", "100"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("mtlbench: error: ") and err.count("\n") == 1 and message in err, err
    assert (mydocs / "thesis.txt").read_text() == "chapter 1" and [p.name for p in mydocs.iterdir()] == ["thesis.txt"]
    assert db.read_bytes() == (root / "r.sqlite").read_bytes() and [p.name for p in res.iterdir()] == ["r.sqlite"]


@pytest.mark.parametrize("setup, message", [
    ("absent", "no results database at"),
    ("empty", "holds no finished runs"),
    ("garbage", "is not a usable mtlbench results database"),
])
def test_bad_databases_are_one_line_errors(tmp_path: Path, capsys, setup: str, message: str) -> None:
    db = tmp_path / "r.sqlite"
    if setup == "empty":
        ResultsStore(db).close()
    elif setup == "garbage":
        db.write_text("not sqlite at all" * 100)
    code = main(["report", "--results", str(db), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("resamples", ["5", "99", "10001", "1000000000"])
def test_resamples_out_of_range_is_one_line_saying_the_range(tmp_path: Path, capsys, resamples: str) -> None:
    code = main(["report", "--results", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "out"), "--quiet",
                 "--resamples", resamples])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("mtlbench: error: ")
    assert f"--resamples must be between 100 and 10,000, got {int(resamples):,}" in err
    assert not (tmp_path / "out").exists()


def test_the_legend_states_the_resamples_used(report) -> None:
    _, out = report  # rendered with --resamples 200
    for page in ("report.md", "report.html"):
        text = (out / page).read_text()
        assert "paired bootstrap over test images (200 resamples, seed-averaged)" in text
        assert "1,000 resamples" not in text


@pytest.mark.parametrize("options, wanted", [
    (["--methods", "deepchets"], "holds no finished runs of method(s) 'deepchets'"),
    (["--methods", "ew,nosuch,pcgrad"], "holds no finished runs of method(s) 'nosuch'"),
    (["--dataset", "nih-cxr14"], "holds no finished runs on dataset 'nih-cxr14'"),
    (["--dataset", "nih-cxr14", "--methods", "ew"], "holds no finished runs of method(s) 'ew' on dataset 'nih-cxr14'"),
])
def test_methods_or_dataset_matching_nothing_lists_what_the_database_holds(
    report, tmp_path: Path, capsys, options: list[str], wanted: str
) -> None:
    root, _ = report
    capsys.readouterr()
    code = main(["report", "--results", str(root / "r.sqlite"), "--out", str(tmp_path / "out"), "--quiet", *options])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("mtlbench: error: "), err
    assert wanted in err and "it holds finished runs of ew (2), deepchest (2), pcgrad (2), graddrop (2) on cxr14-synth" in err, err
    assert not (tmp_path / "out").exists()


def test_variants_are_labelled_by_the_stored_settings_not_todays_defaults() -> None:
    """Runs of one method that differ in a resolved hyperparameter or in the method's version are
    separate variants, labelled by what differs among them; one setting alone is the plain name."""
    from mtlbench.report.load import variant_names

    configs = [
        {"method": "cagrad", "method_params": {"c": 0.4, "rescale": "1+c^2"}, "method_version": 1},
        {"method": "cagrad", "method_params": {"c": 0.5, "rescale": "1+c^2"}, "method_version": 1},
        {"method": "ew", "method_params": {}, "method_version": 1},
        {"method": "mgda", "method_params": {"normalization": "l2"}, "method_version": 1},  # not the default
        {"method": "dwa", "method_params": {"temperature": 2.0}, "method_version": 1},
        {"method": "dwa", "method_params": {"temperature": 2.0}, "method_version": 2},
    ]
    assert variant_names(configs) == ["cagrad[c=0.4]", "cagrad[c=0.5]", "ew", "mgda", "dwa[v1]", "dwa[v2]"]
