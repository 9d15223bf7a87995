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
from scipy import stats

from mtlbench.results.leases import Owner
from mtlbench.cli import main
from mtlbench.report.figures import FIGURES
from mtlbench.results.store import ResultsStore, RunKey

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


def _frame(out: Path) -> pd.DataFrame:
    """The leaderboard CSV: the tidy numeric frame, one row per variant × metric."""
    (csv,) = (out / "tables").glob("leaderboard_*.csv")
    return pd.read_csv(csv)


def _values(out: Path) -> pd.DataFrame:
    """The CSV's `value` as variant × metric."""
    return _frame(out).pivot(index="variant", columns="metric", values="value")


def _store(root: Path, sql: str) -> pd.DataFrame:
    with sqlite3.connect(root / "r.sqlite") as con:
        return pd.read_sql(sql, con)


def _per_run(root: Path) -> pd.DataFrame:
    """Test metrics per complete run (mean over tasks) and its costs, read from the store directly."""
    test = _store(root, "SELECT r.method, r.seed, m.task, m.auroc, m.accuracy, m.loss FROM metrics m "
                        "JOIN runs r USING (run_id) WHERE m.split='test' AND r.status='complete'")
    costs = _store(root, "SELECT r.method, r.seed, c.* FROM costs c JOIN runs r USING (run_id)")
    means = test.groupby(["method", "seed"])[["auroc", "accuracy", "loss"]].mean()
    return means.join(costs.set_index(["method", "seed"]))


def test_every_file_is_written(report) -> None:
    _, out = report
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES) and 'src="http' not in html
    assert len(list((out / "tables").glob("*.csv"))) == 1 and len(list((out / "tables").glob("*.tex"))) == 1
    for name in FIGURES:
        assert len(list(out.glob(f"figures/*/{name}.png"))) == 1 and len(list(out.glob(f"figures/*/{name}.svg"))) == 1
    md = (out / "report.md").read_text()
    assert "### Leaderboard" in md and "claims, checked against this data" in md and "Overall accuracy" in md
    assert "8 finished run(s) in 1 protocol(s)" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [row.split(" | ")[0] for row in rows] == [f"| {m}" for m in METHODS]
    assert md.count("![") == len(FIGURES) and html.count("<tr>") == len(METHODS)  # and one header row
    tex = next((out / "tables").glob("*.tex")).read_text()
    assert tex.count(r"\\") == 1 + len(METHODS) and r"\textbf{" in tex and "$\\pm$" in tex and "**" not in tex


def test_the_csv_is_the_numeric_frame(report) -> None:
    _, out = report
    frame = _frame(out)
    assert list(frame.columns) == ["variant", "metric", "reference", "value", "sd", "lo", "hi", "p", "n"]
    assert all(pd.api.types.is_float_dtype(frame[c]) for c in ("value", "sd", "lo", "hi", "p"))
    assert pd.api.types.is_integer_dtype(frame["n"])
    assert list(dict.fromkeys(frame["variant"])) == list(METHODS) and not frame.duplicated(["variant", "metric"]).any()
    per_variant = {"runs_complete", "auroc", "accuracy", "macro_f1", "balanced_accuracy", "test_loss", "s_per_epoch",
                   "images_per_s", "peak_rss_mb", "delta_m_pct", "delta_auroc_seeds", "delta_auroc_images",
                   "step_ratio"}  # a CPU run: its peak memory is RSS, and there is no CUDA peak
    assert frame.groupby("variant")["metric"].apply(set).to_dict() == {m: per_variant for m in METHODS}
    relative = frame[frame["reference"].notna()]
    assert set(relative["reference"]) == {"ew"}
    assert set(relative["metric"]) == {"delta_m_pct", "delta_auroc_seeds", "delta_auroc_images", "step_ratio"}
    best = frame[frame["metric"] == "auroc"].sort_values("value", ascending=False)["variant"]  # what a user does
    assert set(best) == set(METHODS)


def test_leaderboard_numbers_match_the_store(report) -> None:
    root, out = report
    frame = _frame(out).set_index(["variant", "metric"])
    values = frame["value"].unstack()
    runs = _per_run(root)
    epochs = 2
    for method in METHODS:
        mine = runs.loc[method]
        assert values.loc[method, "auroc"] == pytest.approx(mine["auroc"].mean(), rel=1e-9)
        assert frame.loc[(method, "auroc"), "sd"] == pytest.approx(mine["auroc"].std(ddof=1), rel=1e-9)
        assert frame.loc[(method, "auroc"), "n"] == 2 and values.loc[method, "runs_complete"] == 2
        assert values.loc[method, "accuracy"] == pytest.approx(mine["accuracy"].mean(), rel=1e-9)
        assert values.loc[method, "test_loss"] == pytest.approx(mine["loss"].mean(), rel=1e-9)
        assert values.loc[method, "s_per_epoch"] == pytest.approx((mine["train_s"] / epochs).mean(), rel=1e-9)
        assert values.loc[method, "images_per_s"] == pytest.approx(mine["images_per_s"].mean(), rel=1e-9)
        assert mine["peak_cuda_mb"].isna().all()  # so the peak shown is RSS
        assert values.loc[method, "peak_rss_mb"] == pytest.approx(mine["peak_rss_mb"].max(), rel=1e-9)
        assert values.loc[method, "step_ratio"] == pytest.approx(
            mine["median_step_s"].mean() / runs.loc["ew", "median_step_s"].mean(), rel=1e-9)
        assert 0 <= values.loc[method, "macro_f1"] <= 1 and 0 <= values.loc[method, "balanced_accuracy"] <= 1
        if method != "ew":
            t = stats.ttest_rel(mine["auroc"], runs.loc["ew", "auroc"])
            ci = t.confidence_interval(0.95)
            seeds = frame.loc[(method, "delta_auroc_seeds")]
            assert seeds["value"] == pytest.approx((mine["auroc"] - runs.loc["ew", "auroc"]).mean(), rel=1e-9)
            assert (seeds["lo"], seeds["hi"], seeds["p"]) == pytest.approx((ci.low, ci.high, t.pvalue), rel=1e-9)
            images = frame.loc[(method, "delta_auroc_images")]
            assert images["value"] == pytest.approx(seeds["value"], abs=1e-12)  # the same observed difference
            assert images["lo"] < images["hi"] and 0 <= images["p"] <= 1 and images["n"] == 2
    assert values.loc["ew", "delta_m_pct"] == 0.0 and values.loc["ew", "step_ratio"] == 1.0
    assert np.isnan(values.loc["ew", "delta_auroc_seeds"]) and frame.loc[("ew", "delta_auroc_seeds"), "n"] == 0


def test_the_shown_table_formats_the_frame(report) -> None:
    """report.md shows the CSV's numbers, formatted: nothing computed twice, nothing parsed."""
    _, out = report
    frame = _frame(out).set_index(["variant", "metric"])
    md = (out / "report.md").read_text()
    rows = {line.split(" | ")[0][2:]: line.replace("**", "").split(" | ")
            for line in md.splitlines() if line.startswith("| ") and not line.startswith("| method")}
    for method in METHODS:
        auroc, seeds = frame.loc[(method, "auroc")], frame.loc[(method, "delta_auroc_seeds")]
        memory = frame.loc[(method, "peak_rss_mb"), "value"]
        assert rows[method][1:4] == ["2/2", f"{auroc['value']:.3f} ± {auroc['sd']:.3f} (n=2)",
                                     f"{frame.loc[(method, 'accuracy'), 'value']:.3f}"]
        assert rows[method][-1] == f"{memory:.0f} RSS |"
        assert rows[method][8] == ("—" if method == "ew" else
                                   f"{seeds['value']:+.3f} [{seeds['lo']:+.3f}, {seeds['hi']:+.3f}] p={seeds['p']:.2g}")
    dc = frame.loc[("deepchest", "peak_rss_mb"), "value"]
    assert f"DeepChest's peak is {dc:.0f} MiB RSS (peak process RSS on a CPU" in md
    assert f"pcgrad {frame.loc[('pcgrad', 'peak_rss_mb'), 'value'] / dc:.2f}×" in md


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
    assert list(dict.fromkeys(_frame(out)["variant"])) == ["ew", "deepchest"]
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
    (["--reference", "mgda"], "holds no finished runs of the reference method 'mgda' (--reference);"),
    (["--reference", "mgda", "--methods", "ew"],
     "holds no finished runs of the reference method 'mgda' (--reference);"),
    (["--methods", "nosuch", "--reference", "EW"],
     "holds no finished runs of method(s) 'nosuch' or of the reference method 'EW' (--reference);"),
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


def _delta_m(root: Path, method: str, reference: str) -> float:
    """Δm% from the store's per-task test metrics, written out (mean over seeds, then over tasks)."""
    test = _store(root, "SELECT r.method, m.task, m.auroc, m.loss FROM metrics m JOIN runs r USING (run_id) "
                        "WHERE m.split='test' AND r.status='complete'")
    per_task = test.groupby(["method", "task"])[["auroc", "loss"]].mean()
    mine, ref = per_task.loc[method], per_task.loc[reference]
    terms = pd.concat([(mine["auroc"] - ref["auroc"]) / ref["auroc"].abs(),
                       -(mine["loss"] - ref["loss"]) / ref["loss"].abs()])  # lower loss is better
    return 100 * terms[np.isfinite(terms)].mean()


def test_reference_option_compares_against_another_method(report, tmp_path: Path) -> None:
    root, _ = report
    out = tmp_path / "out"
    assert main(["report", "--results", str(root / "r.sqlite"), "--out", str(out), "--quiet", "--resamples", "100",
                 "--reference", "deepchest", "--methods", "pcgrad"]) == 0
    frame = _frame(out)
    assert list(dict.fromkeys(frame["variant"])) == ["deepchest", "pcgrad"]  # the reference's runs always load
    assert set(frame["reference"].dropna()) == {"deepchest"}
    frame = frame.set_index(["variant", "metric"])
    runs = _per_run(root)
    mine, ref = runs.loc["pcgrad"], runs.loc["deepchest"]
    t = stats.ttest_rel(mine["auroc"], ref["auroc"])
    seeds = frame.loc[("pcgrad", "delta_auroc_seeds")]
    assert (seeds["value"], seeds["p"]) == pytest.approx(((mine["auroc"] - ref["auroc"]).mean(), t.pvalue), rel=1e-9)
    assert frame.loc[("pcgrad", "step_ratio"), "value"] == pytest.approx(
        mine["median_step_s"].mean() / ref["median_step_s"].mean(), rel=1e-9)
    assert frame.loc[("pcgrad", "delta_m_pct"), "value"] == pytest.approx(_delta_m(root, "pcgrad", "deepchest"))
    assert frame.loc[("deepchest", "delta_m_pct"), "value"] == 0.0
    assert frame.loc[("deepchest", "step_ratio"), "value"] == 1.0
    assert frame.loc[("deepchest", "delta_auroc_images"), "n"] == 0
    md = (out / "report.md").read_text()
    assert "| Δm% vs deepchest | ΔAUROC vs deepchest (seeds) | ΔAUROC vs deepchest (images) |" in md
    assert "Per-task change in test loss against deepchest" in md and "EW" not in md


def test_default_reference_delta_m_matches_the_store(report) -> None:
    root, out = report
    values = _values(out)
    for method in METHODS:
        assert values.loc[method, "delta_m_pct"] == pytest.approx(_delta_m(root, method, "ew"), abs=1e-9)


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
